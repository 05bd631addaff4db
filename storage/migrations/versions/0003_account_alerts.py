"""alert: one alert per account (the lead stall a reason belongs to; when the alert closed)

Revision ID: 0003_account_alerts
Revises: 0002_draft_subject
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003_account_alerts'
down_revision = '0002_draft_subject'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lead_stall_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('closed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index('ix_alert_kind_open', ['kind', 'closed_at'])
    # Pings of stalls already closed were closed when their stall closed: before this
    # revision a ping was about one stall.
    op.execute("UPDATE alert SET closed_at = updated_at WHERE kind = 'ping' AND stall_id IN "
               "(SELECT id FROM stall WHERE open_key IS NULL)")


def downgrade() -> None:
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_kind_open')
        batch_op.drop_column('closed_at')
        batch_op.drop_column('lead_stall_id')
