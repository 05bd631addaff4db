"""note: people's notes on accounts and their alerts

Revision ID: 0005_notes
Revises: 0004_decisions
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005_notes'
# 0004 is added in parallel by another change: the lead re-chains this one after it at merge.
down_revision = '0004_decisions'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('note',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('stall_id', sa.Integer(), nullable=True),
    sa.Column('author', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('text', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('request_id', name='uq_note_request')
    )
    with op.batch_alter_table('note', schema=None) as batch_op:
        batch_op.create_index('ix_note_account_created', ['account_id', 'created_at'], unique=False)
        batch_op.create_index('ix_note_created', ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('note', schema=None) as batch_op:
        batch_op.drop_index('ix_note_created')
        batch_op.drop_index('ix_note_account_created')
    op.drop_table('note')
