"""hubspot notes: the outbox of notes for HubSpot companies ([hubspot] notes = true)

Revision ID: 0008_hubspot
Revises: 0007_health
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0009_hubspot'
down_revision = '0008_facts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'hubspot_note_outbox',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('body', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('maybe_sent', sa.Boolean(), nullable=False),
        sa.Column('next_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('claimed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('note_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
        sa.Column('sent_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key', name='uq_hubspot_note_outbox_key'),
    )
    with op.batch_alter_table('hubspot_note_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_hubspot_note_outbox_due', ['status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('hubspot_note_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_hubspot_note_outbox_due')
    op.drop_table('hubspot_note_outbox')
