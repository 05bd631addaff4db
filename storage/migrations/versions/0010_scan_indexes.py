"""scan indexes: stall (status, resolved_at) instead of (status, score); ix_stall_account
dropped; account journey_version

ix_stall_status_score was used by no query (the ranked lists sort open before snoozed
first, which it cannot serve) and, keyed by a score, took every new stall at a random
place: a first scan's 107,000 inserts dirtied its pages again in every batch.
(status, resolved_at) serves the digest's resolved counts and the open counts, and new
stalls (open, not resolved) are appended to it. ix_stall_account is the leading column of
ix_stall_decision (account_id, decision_key), which serves the same look-ups.
ix_account_journey_version: every scan first asks which accounts' journeys were computed
under other rules (storage.stalls.stale_journey), which read every account without it
(50-200 ms of each scan at 100,000 accounts); ingest sets the column only when it changes.

Revision ID: 0010_scan_indexes
Revises: 0009_hubspot
Create Date: 2026-12-04
"""
from alembic import op


revision = '0010_scan_indexes'
down_revision = '0009_hubspot'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('stall', schema=None) as batch_op:
        batch_op.drop_index('ix_stall_status_score')
        batch_op.drop_index('ix_stall_account')
        batch_op.create_index('ix_stall_status_resolved', ['status', 'resolved_at'], unique=False)
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.create_index('ix_account_journey_version', ['journey_version'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_index('ix_account_journey_version')
    with op.batch_alter_table('stall', schema=None) as batch_op:
        batch_op.drop_index('ix_stall_status_resolved')
        batch_op.create_index('ix_stall_account', ['account_id'], unique=False)
        batch_op.create_index('ix_stall_status_score', ['status', 'score'], unique=False)
