"""stall: decisions that last (why a person resolved it, quiet until a date, whether it still holds)

Revision ID: 0004_decisions
Revises: 0003_account_alerts
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004_decisions'
down_revision = '0003_account_alerts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Stalls resolved before this revision carry no decision: their rules reopen as before.
    with op.batch_alter_table('stall', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolution_kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
        batch_op.add_column(sa.Column('quiet_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('decision_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True))
        batch_op.create_index('ix_stall_decision', ['account_id', 'decision_key'])


def downgrade() -> None:
    with op.batch_alter_table('stall', schema=None) as batch_op:
        batch_op.drop_index('ix_stall_decision')
        batch_op.drop_column('decision_key')
        batch_op.drop_column('quiet_until')
        batch_op.drop_column('resolution_kind')
