"""event_volume_hour: events received per UTC hour, source and name (tracking health)

Revision ID: 0006_volume_hours
Revises: 0005_notes
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006_volume_hours'
down_revision = '0005_notes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('event_volume_hour',
    sa.Column('hour', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('hour', 'source', 'name')
    )


def downgrade() -> None:
    op.drop_table('event_volume_hour')
