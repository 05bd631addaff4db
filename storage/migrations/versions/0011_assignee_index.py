"""stall assignee index: only assigned stalls

Every look-up by assignee is of one person's stalls or of all assigned ones, and nearly all
stalls have no assignee: every stall a scan opens was one more entry of this index (a first
scan of 100,000 accounts inserts 107,000 stalls, all unassigned).

Revision ID: 0011_assignee_index
Revises: 0010_scan_indexes
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op


revision = '0011_assignee_index'
down_revision = '0010_scan_indexes'
branch_labels = None
depends_on = None

ASSIGNED = sa.text("assignee IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table('stall', schema=None) as batch_op:
        batch_op.drop_index('ix_stall_assignee')
        batch_op.create_index('ix_stall_assignee', ['assignee'], unique=False, sqlite_where=ASSIGNED,
                              postgresql_where=ASSIGNED)


def downgrade() -> None:
    with op.batch_alter_table('stall', schema=None) as batch_op:
        batch_op.drop_index('ix_stall_assignee')
        batch_op.create_index('ix_stall_assignee', ['assignee'], unique=False)
