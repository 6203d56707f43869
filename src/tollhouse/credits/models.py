"""Credit tables: accounts, the journal (transactions and their legs), lots, top-ups and
the Stripe events already booked.

The journal is the truth and is never edited: every movement is one
``credit_transactions`` row with two ``credit_legs`` rows that sum to zero (the
account's leg and a platform counter-account's, see ``journal.py``). The columns of
``credit_accounts`` named ``funded`` and ``spent`` are projections of it, kept in the
same transaction as each movement so that balances read in one query;
``tollhouse ledger verify`` checks them against the legs. Uniqueness is how every
movement happens once: a transaction's ``key`` (``post:<request id>``,
``purchase:<PaymentIntent id>``, ``grant:<account>:<Idempotency-Key>`` …) and a Stripe
event's id are unique columns, inserted in the transaction that books the money.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    text,
)

from tollhouse.db.meta import metadata
from tollhouse.db.types import Money, UTCDateTime

# SQLite numbers rows only through an INTEGER PRIMARY KEY; Postgres takes a BIGINT.
Sequence = BigInteger().with_variant(Integer(), "sqlite")

credit_accounts = Table(
    "credit_accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner_type", String(16), nullable=False),
    Column("owner_id", String(64), nullable=False),
    Column("overdraft_limit", Money(), nullable=False),
    # Projections of the journal: everything but usage, and usage (posts).
    Column("funded", Money(), nullable=False),
    Column("spent", Money(), nullable=False),
    # Moves whenever what admission may spend changes (funding or overdraft limit):
    # replicas keep the newest limit they have seen (docs/credits.md, *Admission*).
    Column("revision", BigInteger, nullable=False),
    # Draw-down bookkeeping: posts up to this journal sequence are allocated to lots;
    # ``debt`` is what posts spent beyond every lot (the overdraft), repaid by the next.
    Column("allocated_seq", BigInteger, nullable=False),
    Column("debt", Money(), nullable=False),
    Column("low_balance", Money()),  # credit_low below this; NULL: no low alert
    Column("alert_state", String(16), nullable=False),  # ok | low | depleted
    # How many times alert_state has moved: the n of each balance alert's dedup key, and
    # the condition of the UPDATE that moves it (one replica wins each crossing).
    Column("alert_crossings", Integer, nullable=False, server_default=text("0")),
    Column("auto_topup_enabled", Boolean, nullable=False),
    Column("auto_topup_threshold", Money()),
    Column("auto_topup_amount", Money()),
    Column("auto_topup_monthly_cap", Money()),
    Column("auto_topup_failures", Integer, nullable=False),
    Column("auto_topup_disabled_reason", Text),
    # Why the last check that wanted a charge made none (the monthly cap); NULL once one is made.
    Column("auto_topup_skipped_reason", Text),
    Column("stripe_customer", String(255)),
    Column("stripe_payment_method", String(255)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("owner_type", "owner_id"),
)

credit_transactions = Table(
    "credit_transactions",
    metadata,
    Column("seq", Sequence, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("account_id", String(64), ForeignKey("credit_accounts.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", Money(), nullable=False),  # on the account: + credit, − debit
    Column("category", String(16)),
    Column("lot_id", String(64)),
    Column("request_id", String(64)),
    Column("payment_intent", String(255)),
    Column("stripe_event", String(255)),
    Column("reverses", String(64)),  # the transaction a correction answers
    Column("memo", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_credit_transactions_account_id_seq", "account_id", "seq"),
)

credit_legs = Table(
    "credit_legs",
    metadata,
    Column(
        "transaction_seq",
        Sequence,
        ForeignKey("credit_transactions.seq", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("leg", Integer, primary_key=True),
    Column("ledger_account", String(96), nullable=False),
    Column("amount", Money(), nullable=False),
    Index("ix_credit_legs_ledger_account", "ledger_account"),
)

credit_lots = Table(
    "credit_lots",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", String(64), ForeignKey("credit_accounts.id"), nullable=False),
    Column("source", String(16), nullable=False),  # purchase | promotional | referral | adjustment
    Column("amount", Money(), nullable=False),
    Column("remaining", Money(), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("effective_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime()),
    Column("status", String(16), nullable=False),  # scheduled | active | expired
    Column("idempotency_key", String(255), unique=True),
    Column("memo", Text),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_credit_lots_account_id_status", "account_id", "status"),
)

credit_topups = Table(
    "credit_topups",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("account_id", String(64), ForeignKey("credit_accounts.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # checkout | auto
    Column("amount", Money(), nullable=False),
    Column("status", String(16), nullable=False),  # pending | succeeded | failed | expired
    Column("session_id", String(255)),
    Column("checkout_url", Text),
    Column("payment_intent", String(255), unique=True),
    Column("failure_code", String(64)),
    Column("failure_message", Text),
    Column("expires_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_credit_topups_account_id_created_at", "account_id", "created_at"),
)

# At most one auto top-up in flight per account, decided by the database: a second
# replica's insert of another pending attempt fails (``autotopup.open_attempt``).
_PENDING_AUTO = and_(credit_topups.c.kind == "auto", credit_topups.c.status == "pending")
Index(
    "ux_credit_topups_pending_auto",
    credit_topups.c.account_id,
    unique=True,
    sqlite_where=_PENDING_AUTO,
    postgresql_where=_PENDING_AUTO,
)

stripe_events = Table(
    "stripe_events",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("transaction_seq", Sequence),  # the movement it booked; NULL: nothing to book
    Column("received_at", UTCDateTime(), nullable=False),
)
