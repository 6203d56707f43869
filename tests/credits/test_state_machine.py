"""The credits service under random sequences of everything that moves money, on a real
database: grants (some scheduled, some expiring, some under an Idempotency-Key used
before), negative adjustments, usage written by the real recorder with its posts,
Stripe purchases, refunds, disputes and their reversals (each event delivered more than
once), the sweeper's ``run_due`` under a moving clock, allocation, and movements booked
again under a key already used.

After every step: ``credits.verify`` finds no difference (legs balanced, projections
equal to the journal, posts equal to the usage ledger, lots consistent with the
balance), and the journal holds exactly the movements a plain model expects — each
once, none missing — with the balance the model computes. After an allocation, the lots
alone account for the balance: ``sum(active remaining) − debt == funded − spent``.

Hypothesis' state machines are synchronous: each machine owns an event loop
(``asyncio.Runner``) and an engine on a fresh database (a copy of a migrated SQLite
file; on Postgres, one migrated database emptied for each example), both closed in
``teardown``.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tests.credits.books import open_customer_account, record_usage, usage_record
from tests.support import engine_for, settings_for

from tollhouse.credits import journal, lots, payments, service
from tollhouse.credits.models import credit_lots, credit_transactions
from tollhouse.credits.schemas import GrantCreate
from tollhouse.credits.stripe_events import (
    Dispute,
    DisputeWon,
    Purchase,
    Refund,
    RefundFailed,
)
from tollhouse.credits.verify import verify
from tollhouse.db import create_engine, metadata
from tollhouse.errors import Conflict
from tollhouse.ledger import UsageRecord
from tollhouse.money import from_nanos
from tollhouse.web.validation import parse

T = TypeVar("T")
T0 = datetime(2031, 1, 1, tzinfo=UTC)
ZERO = Decimal(0)
NANOS_PER_USD = 10**9
IDEMPOTENCY_KEYS = ("welcome", "promo-1", "promo-2")
# No explain phase: on Python < 3.12 it traces every line, and a failure would take
# minutes to report instead of seconds.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]

# Money: whole nano-dollars (at most 9 decimal places), small and large.
usd = st.one_of(
    st.integers(1, 1000), st.integers(1, 50 * NANOS_PER_USD), st.sampled_from([10**9, 10**8])
).map(from_nanos)
costs = st.one_of(st.just(0), st.integers(1, 3 * NANOS_PER_USD), st.integers(1, 500)).map(
    from_nanos
)


@dataclass
class Books:
    """The model: what each account's journal must hold."""

    balance: Decimal = ZERO
    spent: Decimal = ZERO
    keys: set[str] = field(default_factory=set)


@dataclass
class Lot:
    id: str
    account: str
    amount: Decimal
    effective_at: datetime
    expires_at: datetime | None
    status: str  # scheduled | active | expired


@dataclass
class Paid:
    """A Stripe purchase, and what refunds and disputes took back from it."""

    account: str
    intent: str
    amount: Decimal
    taken: Decimal = ZERO
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TakeBack:
    kind: str  # refund | dispute
    ident: str
    amount: Decimal
    paid: Paid


class CreditMachine(RuleBasedStateMachine):
    accounts = Bundle("accounts")
    payments = Bundle("payments")
    takebacks = Bundle("takebacks")
    records = Bundle("records")

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.url = store.fresh()
        self.runner = asyncio.Runner()
        self.engine = create_engine(settings_for(self.url))
        self.runner.run(store.empty(self.engine))
        self.now = T0
        self.books: dict[str, Books] = {}
        self.lots: dict[str, Lot] = {}
        self.granted: dict[tuple[str, str], tuple[Decimal, str, int, str]] = {}
        self.events: list[str] = []

    def teardown(self) -> None:
        try:
            self.runner.run(self.engine.dispose())
        finally:
            self.runner.close()
            self.store.drop(self.url)

    # -- plumbing ----------------------------------------------------------------------

    def run(self, coroutine: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coroutine

        return self.runner.run(wrapped())

    def tx(self, action: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async def go() -> T:
            async with self.engine.begin() as conn:
                return await action(conn)

        return self.runner.run(go())

    def read(self, action: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        async def go() -> T:
            async with self.engine.connect() as conn:
                return await action(conn)

        return self.runner.run(go())

    def booked(self, account: str, key: str, amount: Decimal, *, post: bool = False) -> None:
        books = self.books[account]
        assert key not in books.keys, f"the model books {key} twice"
        books.keys.add(key)
        books.balance += amount
        if post:
            books.spent -= amount

    # -- steps -------------------------------------------------------------------------

    @initialize(target=accounts, overdraft=st.sampled_from(["0", "0.000001", "5"]))
    def open_accounts(self, overdraft: str) -> Any:
        async def create(conn: AsyncConnection) -> list[str]:
            first = await open_customer_account(conn, "acme")
            second = await open_customer_account(conn, "globex", overdraft_limit=Decimal(overdraft))
            return [first, second]

        ids = self.tx(create)
        for account in ids:
            self.books[account] = Books()
        return multiple(*ids)

    @rule(
        account=accounts,
        amount=usd,
        category=st.sampled_from(["promotional", "referral", "adjustment"]),
        priority=st.integers(0, 20),
        starts_in=st.sampled_from([None, -2, 0, 1, 6, 30]),
        lasts=st.one_of(st.none(), st.integers(1, 48)),
        key=st.one_of(st.none(), st.sampled_from(IDEMPOTENCY_KEYS)),
    )
    def grant(
        self,
        account: str,
        amount: Decimal,
        category: str,
        priority: int,
        starts_in: int | None,
        lasts: int | None,
        key: str | None,
    ) -> None:
        effective = None if starts_in is None else self.now + timedelta(hours=starts_in)
        expires = None if lasts is None else (effective or self.now) + timedelta(hours=lasts)
        data: dict[str, Any] = {"amount": amount, "category": category, "priority": priority}
        if effective is not None:
            data["effective_at"] = effective.isoformat()
        if expires is not None:
            data["expires_at"] = expires.isoformat()
        self._grant(account, parse(GrantCreate, data), key)

    @rule(
        account=accounts,
        amount=usd,
        key=st.one_of(st.none(), st.sampled_from(IDEMPOTENCY_KEYS)),
    )
    def adjust(self, account: str, amount: Decimal, key: str | None) -> None:
        """A negative adjustment: credit taken away (drawn from lots like usage)."""
        body = parse(GrantCreate, {"amount": -amount, "category": "adjustment", "memo": "undo"})
        self._grant(account, body, key)

    def _grant(self, account: str, body: GrantCreate, key: str | None) -> None:
        before = self.granted.get((account, key)) if key is not None else None
        if before is not None and before[:3] != (body.amount, body.category, body.priority):
            event("grant: a different grant under a used key")
            with pytest.raises(Conflict):
                self.tx(lambda conn: service.grant(conn, account, body, key, now=self.now))
            return
        lot, new = self.tx(lambda conn: service.grant(conn, account, body, key, now=self.now))
        if before is not None:
            event("grant: the same grant again")
            assert not new
            assert lot.id == before[3]
            return
        assert new
        if key is not None:
            self.granted[(account, key)] = (body.amount, body.category, body.priority, lot.id)
        if body.amount < 0:
            event("grant: negative adjustment")
            # Its id is its movement's; keyed by the Idempotency-Key when given.
            transaction = self.tx(lambda conn: _movement(conn, lot.id))
            assert (transaction.amount, transaction.kind) == (body.amount, "grant")
            if key is not None:
                assert transaction.key == f"grant:{account}:{key}"
            self.booked(account, transaction.key, body.amount)
            return
        effective = body.effective_at or self.now
        status = "active" if effective <= self.now else "scheduled"
        event(f"grant: {status}")
        assert lot.status == status
        self.lots[lot.id] = Lot(lot.id, account, body.amount, effective, body.expires_at, status)
        if status == "active":
            self.booked(account, f"fund:{lot.id}", body.amount)

    @rule(
        target=records,
        account=accounts,
        spent=st.lists(costs, min_size=1, max_size=4),
        unpaid=st.booleans(),
    )
    def use(self, account: str, spent: list[Decimal], unpaid: bool) -> Any:
        """Usage written as the gateway writes it: the recorder, posts in its batch."""
        records = [usage_record(account, cost, self.now) for cost in spent]
        if unpaid:  # a request no prepaid account paid for posts nothing
            records.append(usage_record(None, Decimal("0.5"), self.now))
        self.run(record_usage(self.engine, records))
        # One post for the account's records of the batch, keyed by the first of them.
        paid = [r for r in records if r.credit_account_id and r.cost]
        if paid:
            total = sum((r.cost for r in paid), Decimal(0))
            self.booked(account, f"post:{paid[0].id}", -total, post=True)
        return multiple(*records)

    @rule(record=records)
    def write_again(self, record: UsageRecord) -> None:
        """A record written twice (a replay from the spool) posts once."""
        self.run(record_usage(self.engine, [record]))

    @rule(target=records, record=records, cost=costs)
    def replay_with_more(self, record: UsageRecord, cost: Decimal) -> Any:
        """A spooled batch replayed after its first write committed, with a record the
        first write did not have: only the new one posts, under its own key."""
        new = usage_record(record.credit_account_id, cost, self.now)
        self.run(record_usage(self.engine, [record, new]))
        if new.credit_account_id and new.cost:
            self.booked(new.credit_account_id, f"post:{new.id}", -new.cost, post=True)
        return new

    @rule(
        target=payments,
        account=accounts,
        cents=st.integers(1, 100_000),
        deliveries=st.integers(1, 3),
        announced_twice=st.booleans(),
    )
    def purchase(self, account: str, cents: int, deliveries: int, announced_twice: bool) -> Any:
        intent = f"pi_{uuid.uuid4().hex}"
        amount = Decimal(cents).scaleb(-2)
        paid = Paid(account, intent, amount)
        fact = Purchase(f"evt_{uuid.uuid4().hex}", intent, amount, account, None, "checkout")
        self._deliver(paid, fact, "checkout.session.completed", deliveries)
        if announced_twice:  # payment_intent.succeeded for the same payment
            other = Purchase(
                f"evt_{uuid.uuid4().hex}", intent, amount, account, None, "payment_intent"
            )
            assert self._book(other.event_id, "payment_intent.succeeded", other) is False
        self.booked(account, fact.key, amount)
        return paid

    @rule(target=takebacks, paid=payments, data=st.data(), dispute=st.booleans())
    def take_back(self, paid: Paid, data: st.DataObject, dispute: bool) -> Any:
        """A refund or a dispute: never more than Stripe could take back."""
        left = paid.amount - paid.taken
        if left <= 0:
            return multiple()
        cents = data.draw(st.integers(1, int(left * 100)), label="cents")
        amount = Decimal(cents).scaleb(-2)
        ident = uuid.uuid4().hex
        event_id = f"evt_{ident}"
        fact: Refund | Dispute
        if dispute:
            fact = Dispute(event_id, paid.intent, None, f"dp_{ident}", amount)
        else:
            fact = Refund(event_id, paid.intent, None, f"re_{ident}", amount)
        kind = "dispute" if dispute else "refund"
        event(f"take back: {kind}")
        self._deliver(paid, fact, f"{kind}.created", data.draw(st.integers(1, 2), label="times"))
        paid.taken += amount
        self.booked(paid.account, fact.key, -amount)
        return TakeBack(kind, ident, amount, paid)

    @rule(taken=consumes(takebacks))
    def give_back(self, taken: TakeBack) -> None:
        """A dispute won, or a refund that failed: the money comes back, once."""
        event_id = f"evt_back_{taken.ident}"
        paid = taken.paid
        fact: DisputeWon | RefundFailed
        if taken.kind == "dispute":
            fact = DisputeWon(event_id, paid.intent, None, f"dp_{taken.ident}", taken.amount)
        else:
            fact = RefundFailed(event_id, paid.intent, None, f"re_{taken.ident}", taken.amount)
        self._deliver(paid, fact, "charge.dispute.closed", 2)
        paid.taken -= taken.amount
        self.booked(paid.account, fact.key, taken.amount)

    def _deliver(self, paid: Paid, fact: Any, kind: str, times: int) -> None:
        assert self._book(fact.event_id, kind, fact) is True
        paid.events.append(fact.event_id)
        self.events.append(fact.event_id)
        for _ in range(times - 1):
            assert self._book(fact.event_id, kind, fact) is None  # a duplicate delivery

    def _book(self, event_id: str, kind: str, fact: Any) -> bool | None:
        return self.tx(lambda conn: payments.book_event(conn, event_id, kind, fact))

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def deliver_again(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(self.events), label="event")
        assert self._book(event_id, "charge.refunded", None) is None

    @rule(hours=st.sampled_from([0, 1, 3, 12, 40]))
    def sweep(self, hours: int) -> None:
        """Time passes and the sweeper books what fell due."""
        self.now += timedelta(hours=hours)
        starting = [lot for lot in self.lots.values() if lot.status == "scheduled"]
        starting = [lot for lot in starting if lot.effective_at <= self.now]
        ending = [
            lot
            for lot in self.lots.values()
            if lot.status != "expired" and lot.expires_at is not None
            if lot.expires_at <= self.now
        ]
        started, expired = self.tx(lambda conn: service.run_due(conn, self.now))
        assert (started, expired) == (len(starting), len(ending))
        event(f"sweep: {min(started, 2)}+ started, {min(expired, 2)}+ expired")
        for lot in starting:
            lot.status = "active"
            self.booked(lot.account, f"fund:{lot.id}", lot.amount)
        for lot in ending:
            lot.status = "expired"
            found = self.tx(lambda conn, lot=lot: _expiry(conn, lot.id))
            row = self.tx(lambda conn, lot=lot: _lot(conn, lot.id))
            assert (row.status, row.remaining) == ("expired", ZERO)
            if found is not None:  # what was left of it, never more than it held
                assert -lot.amount <= found < 0
                self.booked(lot.account, f"expire:{lot.id}", found)
        # Due once: the same moment again books nothing.
        assert self.tx(lambda conn: service.run_due(conn, self.now)) == (0, 0)

    @rule(account=accounts)
    def allocate(self, account: str) -> None:
        """Once allocated, the lots alone account for the balance."""
        self.tx(lambda conn: lots.allocate(conn, account))
        row = self.tx(lambda conn: service.get_account(conn, account))
        held = self.tx(lambda conn: _held(conn, account))
        assert row.debt >= 0
        assert held - row.debt == row.funded - row.spent
        if row.debt > 0:
            assert held == 0

    @rule(account=accounts, data=st.data(), amount=usd)
    def book_again(self, account: str, data: st.DataObject, amount: Decimal) -> None:
        """A key already in the journal books nothing, whatever the movement says."""
        keys = sorted(self.books[account].keys)
        if not keys:
            return
        key = data.draw(st.sampled_from(keys), label="key")
        kind = data.draw(st.sampled_from(journal.KINDS), label="kind")
        movement = journal.Movement(account_id=account, kind=kind, amount=amount, key=key)
        fresh = journal.Movement(account_id=account, kind="grant", amount=amount, key=key + "!")
        booked = self.tx(lambda conn: journal.book_many(conn, [movement, movement]))
        assert booked == []
        assert self.tx(lambda conn: journal.book(conn, movement)) is None
        # Beside a new movement, only the new one is booked (then undone: rolled back).

        async def mixed(conn: AsyncConnection) -> list[Any]:
            transaction = await conn.begin_nested()
            done = await journal.book_many(conn, [movement, fresh])
            await transaction.rollback()
            return done

        assert [m.key for _, m in self.tx(mixed)] == [fresh.key]

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def the_books_hold(self) -> None:
        if self.books:
            self.read(self._check)

    async def _check(self, conn: AsyncConnection) -> None:
        report = await verify(conn)
        assert report.ok, report.differences
        t = credit_transactions.c
        for account, books in self.books.items():
            row = await service.get_account(conn, account)
            total = service.balance_of(row, None).total
            assert total == books.balance == row.funded - row.spent
            assert row.spent == books.spent
            keys = await _scalars(conn, select(t.key).where(t.account_id == account))
            assert len(keys) == len(set(keys))  # nothing booked twice
            assert set(keys) == books.keys  # nothing missing, nothing extra
            assert await service.journal_totals(conn, account) == (row.funded, row.spent)


async def _scalars(conn: AsyncConnection, query: Any) -> list[Any]:
    return list((await conn.execute(query)).scalars())


async def _expiry(conn: AsyncConnection, lot_id: str) -> Decimal | None:
    t = credit_transactions.c
    query = select(t.amount).where(t.key == f"expire:{lot_id}")
    found: Decimal | None = (await conn.execute(query)).scalar_one_or_none()
    return found


async def _movement(conn: AsyncConnection, transaction_id: str) -> Any:
    t = credit_transactions.c
    return (await conn.execute(select(credit_transactions).where(t.id == transaction_id))).one()


async def _lot(conn: AsyncConnection, lot_id: str) -> Any:
    return (await conn.execute(select(credit_lots).where(credit_lots.c.id == lot_id))).one()


async def _held(conn: AsyncConnection, account: str) -> Decimal:
    lot = credit_lots.c
    query = select(func.sum(lot.remaining)).where(lot.account_id == account, lot.status == "active")
    return Decimal((await conn.execute(query)).scalar_one() or 0)


# --- fresh databases ----------------------------------------------------------------------


class Store:
    """A fresh migrated database per example: cheap copies of one migrated template."""

    def fresh(self) -> str:
        raise NotImplementedError

    async def empty(self, engine: AsyncEngine) -> None:
        """Nothing to do for a database that is new."""

    def drop(self, url: str) -> None:
        """Nothing to remove."""


class SQLiteStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template.db"
        asyncio.run(_migrate(f"sqlite+aiosqlite:///{self.template}"))
        # The last connection closed checkpointed the WAL: the file alone is the copy.
        assert not Path(f"{self.template}-wal").exists()

    def fresh(self) -> str:
        path = self.root / f"{uuid.uuid4().hex}.db"
        shutil.copyfile(self.template, path)
        return f"sqlite+aiosqlite:///{path}"

    def drop(self, url: str) -> None:
        path = Path(url.removeprefix("sqlite+aiosqlite:///"))
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            name.unlink(missing_ok=True)


class PostgresStore(Store):
    """One migrated database (``pg_url``'s, dropped after the test), emptied for each
    example: faster than a new database each time."""

    def __init__(self, url: str) -> None:
        self.url = url
        asyncio.run(_migrate(url))

    def fresh(self) -> str:
        return self.url

    async def empty(self, engine: AsyncEngine) -> None:
        names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


async def _migrate(url: str) -> None:
    async with engine_for(url):
        pass


@pytest.fixture
def sqlite_store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path)


@pytest.fixture
def postgres_store(pg_url: str) -> PostgresStore:
    return PostgresStore(pg_url)


@pytest.mark.slow
def test_random_movements_keep_the_books_on_sqlite(sqlite_store: SQLiteStore) -> None:
    run_state_machine_as_test(
        lambda: CreditMachine(sqlite_store),
        settings=settings(max_examples=30, stateful_step_count=25, deadline=None, phases=PHASES),
    )


@pytest.mark.slow
def test_random_movements_keep_the_books_on_postgres(postgres_store: PostgresStore) -> None:
    run_state_machine_as_test(
        lambda: CreditMachine(postgres_store),
        settings=settings(max_examples=10, stateful_step_count=20, deadline=None, phases=PHASES),
    )
