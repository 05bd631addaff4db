"""initial schema

Revision ID: 0001_initial
Revises: 
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0001_initial'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('account',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('name_lower', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('domain', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('plan', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('arr', sa.Float(), nullable=False),
    sa.Column('seats', sa.Integer(), nullable=True),
    sa.Column('employees', sa.Integer(), nullable=True),
    sa.Column('owner_email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('owner_slack_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('track', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('renewal_date', sa.Date(), nullable=True),
    sa.Column('stripe_customer_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('signup_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('activated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('stage', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('waiting_step', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('waiting_since', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('stalled_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('checkpoint_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('steps_done', sa.Integer(), nullable=False),
    sa.Column('journey_version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('first_seen_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_seen_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('payment_failed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('traits_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('lifecycle_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('payment_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('next_eval_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.create_index('ix_account_checkpoint_at', ['checkpoint_at'], unique=False)
        batch_op.create_index('ix_account_domain', ['domain'], unique=False)
        batch_op.create_index('ix_account_name_lower', ['name_lower'], unique=False)
        batch_op.create_index('ix_account_next_eval', ['next_eval_at'], unique=False)
        batch_op.create_index('ix_account_owner_email', ['owner_email'], unique=False)
        batch_op.create_index('ix_account_renewal_date', ['renewal_date'], unique=False)
        batch_op.create_index('ix_account_signup_at', ['signup_at'], unique=False)
        batch_op.create_index('ix_account_stalled_at', ['stalled_at'], unique=False)

    op.create_table('active_day',
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'day')
    )
    with op.batch_alter_table('active_day', schema=None) as batch_op:
        batch_op.create_index('ix_active_day_day', ['day', 'account_id'], unique=False)

    op.create_table('alert',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stall_id', sa.Integer(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('ts', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('priority', sqlmodel.sql.sqltypes.AutoString(length=2), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('acked_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('acked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('stall_id', 'channel', 'kind', name='uq_alert_stall_channel_kind')
    )
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alert_stall_id'), ['stall_id'], unique=False)

    op.create_table('audit_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('stall_id', sa.Integer(), nullable=True),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index('ix_audit_stall', ['stall_id', 'at'], unique=False)

    op.create_table('contact',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('first_name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('unsubscribed', sa.Boolean(), nullable=False),
    sa.Column('last_seen_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('contact', schema=None) as batch_op:
        batch_op.create_index('ix_contact_account_id', ['account_id'], unique=False)
        batch_op.create_index('ix_contact_email', ['email'], unique=False)

    op.create_table('digest_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('posted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('items', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('day', 'channel', name='uq_digest_day_channel')
    )
    op.create_table('draft',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stall_id', sa.Integer(), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('contact_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('recipient', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('body', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('generated_subject', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('generated_body', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('blocked_reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('approved_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('approved_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('sent_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('draft', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_draft_stall_id'), ['stall_id'], unique=False)

    op.create_table('event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('contact_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('occurred_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('received_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('milestone', sa.Boolean(), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'message_id', name='uq_event_source_message')
    )
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index('ix_event_account_milestone', ['account_id', 'occurred_at'], unique=False, sqlite_where=sa.text('milestone'), postgresql_where=sa.text('milestone'))

    op.create_table('event_volume',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('missing_required', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'day')
    )
    op.create_table('lease',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('mail_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('draft_id', sa.Integer(), nullable=False),
    sa.Column('recipient', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('body', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('claimed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('sent_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('draft_id', name='uq_mail_outbox_draft')
    )
    with op.batch_alter_table('mail_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_mail_outbox_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('meta',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('value', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('slack_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('method', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('claimed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('sent_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('alert_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key', name='uq_slack_outbox_key')
    )
    with op.batch_alter_table('slack_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_slack_outbox_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('stall',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('rule', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('step', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('open_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('opened_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('stalled_since', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('threshold_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('resolved_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('resolution', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('resolved_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('severity', sa.Float(), nullable=False),
    sa.Column('priority', sqlmodel.sql.sqltypes.AutoString(length=2), nullable=False),
    sa.Column('why', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('stage', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('assignee', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('snoozed_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('snoozed_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('recovery_attempts', sa.Integer(), nullable=False),
    sa.Column('last_recovery_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('open_key', name='uq_stall_open_key')
    )
    with op.batch_alter_table('stall', schema=None) as batch_op:
        batch_op.create_index('ix_stall_account', ['account_id'], unique=False)
        batch_op.create_index('ix_stall_assignee', ['assignee'], unique=False)
        batch_op.create_index('ix_stall_status_score', ['status', 'score'], unique=False)

    op.create_table('ticket',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('requester_email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('topic', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.Column('priority', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.create_index('ix_ticket_account_created', ['account_id', 'created_at'], unique=False)
        batch_op.create_index('ix_ticket_created', ['created_at'], unique=False)

    op.create_table('tracking_issue',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('event_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('property', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('first_seen_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('example_message_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('reported_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('resolved_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'event_name', 'property', name='uq_tracking_issue')
    )



def downgrade() -> None:

    op.drop_table('tracking_issue')
    with op.batch_alter_table('ticket', schema=None) as batch_op:
        batch_op.drop_index('ix_ticket_created')
        batch_op.drop_index('ix_ticket_account_created')

    op.drop_table('ticket')
    with op.batch_alter_table('stall', schema=None) as batch_op:
        batch_op.drop_index('ix_stall_status_score')
        batch_op.drop_index('ix_stall_assignee')
        batch_op.drop_index('ix_stall_account')

    op.drop_table('stall')
    with op.batch_alter_table('slack_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_slack_outbox_due')

    op.drop_table('slack_outbox')
    op.drop_table('meta')
    with op.batch_alter_table('mail_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_mail_outbox_due')

    op.drop_table('mail_outbox')
    op.drop_table('lease')
    op.drop_table('event_volume')
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_account_milestone', sqlite_where=sa.text('milestone'), postgresql_where=sa.text('milestone'))

    op.drop_table('event')
    with op.batch_alter_table('draft', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_draft_stall_id'))

    op.drop_table('draft')
    op.drop_table('digest_run')
    with op.batch_alter_table('contact', schema=None) as batch_op:
        batch_op.drop_index('ix_contact_email')
        batch_op.drop_index('ix_contact_account_id')

    op.drop_table('contact')
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_stall')

    op.drop_table('audit_entry')
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alert_stall_id'))

    op.drop_table('alert')
    with op.batch_alter_table('active_day', schema=None) as batch_op:
        batch_op.drop_index('ix_active_day_day')

    op.drop_table('active_day')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_index('ix_account_stalled_at')
        batch_op.drop_index('ix_account_signup_at')
        batch_op.drop_index('ix_account_renewal_date')
        batch_op.drop_index('ix_account_owner_email')
        batch_op.drop_index('ix_account_next_eval')
        batch_op.drop_index('ix_account_name_lower')
        batch_op.drop_index('ix_account_domain')
        batch_op.drop_index('ix_account_checkpoint_at')

    op.drop_table('account')

