"""account health: the score and its reasons on the account; daily per-account and company snapshots

Revision ID: 0007_health
Revises: 0006_volume_hours
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007_health'
down_revision = '0006_volume_hours'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('health', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('health_reasons', sa.JSON(), nullable=True))
    op.create_table(
        'account_health_day',
        sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('health', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('account_id', 'day'),
    )
    op.create_index('ix_account_health_day_day', 'account_health_day', ['day'])
    op.create_table(
        'daily_snapshot',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('open_alerts', sa.JSON(), nullable=False),
        sa.Column('arr_at_risk', sa.JSON(), nullable=False),
        sa.Column('activation', sa.JSON(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('day'),
    )
    # Scores appear as the scan next evaluates each account: make every account due.
    op.execute("UPDATE account SET next_eval_at = NULL")


def downgrade() -> None:
    op.drop_table('daily_snapshot')
    op.drop_index('ix_account_health_day_day', table_name='account_health_day')
    op.drop_table('account_health_day')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_column('health_reasons')
        batch_op.drop_column('health')
