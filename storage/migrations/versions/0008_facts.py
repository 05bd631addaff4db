"""per-fact times on accounts (fact_times), Stripe events waiting for their customer's account

Revision ID: 0008_facts
Revises: 0007_health
Create Date: 2026-12-04
"""
from datetime import timezone

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008_facts'
down_revision = '0007_health'
branch_labels = None
depends_on = None

FACTS = ("name", "domain", "plan", "arr", "owner_email", "renewal_date", "employees", "seats")


def upgrade() -> None:
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fact_times', sa.JSON(), nullable=True))
    op.create_table(
        'stripe_pending',
        sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('occurred_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('facts', sa.JSON(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('message_id'),
    )
    op.create_index('ix_stripe_pending_customer', 'stripe_pending', ['customer_id'])
    _backfill()


def _backfill() -> None:
    """Until now one time (traits_at) stood for every fact: each fact that holds a value gets
    it as its own time. A fact never set (no value, ARR 0, the name still the id) gets none,
    so any message may set it."""
    account = sa.table(
        'account', sa.column('id', sa.String()), sa.column('traits_at', sqlmodel.sql.sqltypes.UTCDateTime()),
        sa.column('fact_times', sa.JSON()), *(sa.column(name) for name in FACTS))
    conn = op.get_bind()
    rows = conn.execute(sa.select(account.c.id, account.c.traits_at, *(account.c[n] for n in FACTS))
                        .where(account.c.traits_at.is_not(None))).all()
    updates = []
    for row in rows:
        at = row.traits_at if row.traits_at.tzinfo else row.traits_at.replace(tzinfo=timezone.utc)
        stamp = at.astimezone(timezone.utc).isoformat()
        times = {name: stamp for name in FACTS
                 if getattr(row, name) not in (None, "", 0, 0.0) and not (name == "name" and row.name == row.id)}
        if times:
            updates.append({"aid": row.id, "times": times})
    if updates:
        conn.execute(sa.update(account).where(account.c.id == sa.bindparam("aid"))
                     .values(fact_times=sa.bindparam("times")), updates)


def downgrade() -> None:
    op.drop_index('ix_stripe_pending_customer', table_name='stripe_pending')
    op.drop_table('stripe_pending')
    with op.batch_alter_table('account', schema=None) as batch_op:
        batch_op.drop_column('fact_times')
