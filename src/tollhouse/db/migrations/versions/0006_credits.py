"""Prepaid credits: accounts, the balanced journal (transactions and legs), lots, top-ups,
booked Stripe events; usage records name the account that paid.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollhouse.db.types import Money, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("credit_account_id", sa.String(length=64), nullable=True))
    op.create_index(
        "ix_usage_records_credit_account_id_created_at",
        "usage_records",
        ["credit_account_id", "created_at"],
    )
    op.create_table(
        "credit_accounts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner_type", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("overdraft_limit", Money(), nullable=False),
        sa.Column("funded", Money(), nullable=False),
        sa.Column("spent", Money(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("allocated_seq", sa.BigInteger(), nullable=False),
        sa.Column("debt", Money(), nullable=False),
        sa.Column("low_balance", Money(), nullable=True),
        sa.Column("alert_state", sa.String(length=16), nullable=False),
        sa.Column("auto_topup_enabled", sa.Boolean(), nullable=False),
        sa.Column("auto_topup_threshold", Money(), nullable=True),
        sa.Column("auto_topup_amount", Money(), nullable=True),
        sa.Column("auto_topup_monthly_cap", Money(), nullable=True),
        sa.Column("auto_topup_failures", sa.Integer(), nullable=False),
        sa.Column("auto_topup_disabled_reason", sa.Text(), nullable=True),
        sa.Column("stripe_customer", sa.String(length=255), nullable=True),
        sa.Column("stripe_payment_method", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_accounts")),
        sa.UniqueConstraint(
            "owner_type", "owner_id", name=op.f("uq_credit_accounts_owner_type_owner_id")
        ),
    )
    op.create_table(
        "credit_transactions",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=True),
        sa.Column("lot_id", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("payment_intent", sa.String(length=255), nullable=True),
        sa.Column("stripe_event", sa.String(length=255), nullable=True),
        sa.Column("reverses", sa.String(length=64), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["credit_accounts.id"],
            name=op.f("fk_credit_transactions_account_id_credit_accounts"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_credit_transactions")),
        sa.UniqueConstraint("id", name=op.f("uq_credit_transactions_id")),
        sa.UniqueConstraint("key", name=op.f("uq_credit_transactions_key")),
    )
    op.create_index(
        "ix_credit_transactions_account_id_seq", "credit_transactions", ["account_id", "seq"]
    )
    op.create_table(
        "credit_legs",
        sa.Column("transaction_seq", _SEQ, nullable=False),
        sa.Column("leg", sa.Integer(), nullable=False),
        sa.Column("ledger_account", sa.String(length=96), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_seq"],
            ["credit_transactions.seq"],
            name=op.f("fk_credit_legs_transaction_seq_credit_transactions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("transaction_seq", "leg", name=op.f("pk_credit_legs")),
    )
    op.create_index("ix_credit_legs_ledger_account", "credit_legs", ["ledger_account"])
    op.create_table(
        "credit_lots",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("remaining", Money(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("effective_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["credit_accounts.id"],
            name=op.f("fk_credit_lots_account_id_credit_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_lots")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_credit_lots_idempotency_key")),
    )
    op.create_index("ix_credit_lots_account_id_status", "credit_lots", ["account_id", "status"])
    op.create_table(
        "credit_topups",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column("payment_intent", sa.String(length=255), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["credit_accounts.id"],
            name=op.f("fk_credit_topups_account_id_credit_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_topups")),
        sa.UniqueConstraint("payment_intent", name=op.f("uq_credit_topups_payment_intent")),
    )
    op.create_index(
        "ix_credit_topups_account_id_created_at", "credit_topups", ["account_id", "created_at"]
    )
    op.create_table(
        "stripe_events",
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("transaction_seq", _SEQ, nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_stripe_events")),
    )


def downgrade() -> None:
    op.drop_table("stripe_events")
    op.drop_index("ix_credit_topups_account_id_created_at", table_name="credit_topups")
    op.drop_table("credit_topups")
    op.drop_index("ix_credit_lots_account_id_status", table_name="credit_lots")
    op.drop_table("credit_lots")
    op.drop_index("ix_credit_legs_ledger_account", table_name="credit_legs")
    op.drop_table("credit_legs")
    op.drop_index("ix_credit_transactions_account_id_seq", table_name="credit_transactions")
    op.drop_table("credit_transactions")
    op.drop_table("credit_accounts")
    op.drop_index("ix_usage_records_credit_account_id_created_at", table_name="usage_records")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("credit_account_id")
