"""Reconciliation: does the credit journal hold together, and agree with the usage ledger?

``verify(conn)`` reads the database (one consistent snapshot, never a write) and lists
every difference it finds; ``tollhouse ledger verify`` prints them. For every account:

- ``legs``: each transaction has exactly two legs that sum to zero, the account's
  (``credits:<id>``, the transaction's amount) and the counter-account its kind books
  against (``journal.counterpart``); no leg without its transaction;
- ``funded``, ``spent``: the projections on ``credit_accounts`` equal the sums of the
  journal (everything but posts; posts);
- ``posts``: the posts are the usage records the account paid for: every record with
  that ``credit_account_id`` and a cost above zero names a post of that account
  (``credit_post``), every post is minus the costs of the records naming it, and their
  sums agree (records without their post, and posts extra or of another amount, are
  named); a record naming an account that does not exist is a difference too;
- ``lots``: what the lots hold reconciles with the balance. Funding is put on its lot
  when booked (a purchase's lot is created with it, a grant's lot is activated with it,
  an expiry empties its lot); every other movement (posts, negative adjustments,
  refunds, disputes, reversals) is drawn from the lots by ``lots.allocate``, which
  records how far it got (``allocated_seq``) and what spending took beyond every lot
  (``debt``). So at every commit, with *pending* the movements after ``allocated_seq``
  that allocation applies::

      sum(remaining of active lots) − debt + pending == funded − spent  (journal)

  Scheduled lots count on neither side: their money is booked when they take effect.
  Each lot also stands alone: ``remaining`` never below zero, an expired lot empty, a
  scheduled lot unfunded and whole, an active or expired lot funded by exactly one
  ``purchase``/``grant`` of its amount; and ``debt`` is never negative, nor owed while
  an active lot still has credit (every funding is followed by an allocation).

What it cannot check (it reads the database only): a running server's admission
counters (in memory or Redis) against the ledger, and so neither budgets nor what
requests in flight hold; usage still buffered or spooled by a server (its posts are
written with it); whether Stripe's own records agree with the purchases, refunds and
disputes booked; and whether a usage record should have named an account it does not.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, and_, case, func, literal, literal_column, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.credits.journal import KINDS, counterpart, ledger_account
from tollhouse.credits.models import (
    credit_accounts,
    credit_legs,
    credit_lots,
    credit_transactions,
)
from tollhouse.db.snapshot import read_snapshot
from tollhouse.ledger.models import usage_records
from tollhouse.money import format_usd

ZERO = Decimal(0)
LISTED = 5  # request ids or post keys named per account and kind of difference
_FETCHED = 10_000  # ids read at most per kind of difference (the rest are counted)

_a = credit_accounts.c
_t = credit_transactions.c
_l = credit_legs.c
_lot = credit_lots.c
_u = usage_records.c
_FUNDING = ("purchase", "grant")
_LOT_STATUSES = ("scheduled", "active", "expired")


@dataclass(frozen=True, slots=True)
class Difference:
    """Something that does not hold: ``expected`` is what the source of truth says
    (the journal, or the usage ledger for posts), ``found`` what is stored."""

    account_id: str  # "-": none can be named (a leg whose transaction is gone)
    check: str  # legs | funded | spent | posts | lots | lot | debt | account
    expected: str
    found: str
    detail: str = ""


@dataclass(slots=True)
class Report:
    accounts: int = 0
    transactions: int = 0
    posts: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def usd(amount: Decimal) -> str:
    return f"{format_usd(amount)} USD"


def _where(query: Select[Any], column: Any, account_id: str | None) -> Select[Any]:
    return query if account_id is None else query.where(column == account_id)


async def verify_engine(engine: AsyncEngine, account_id: str | None = None) -> Report:
    """``verify`` in one read-only snapshot: a server booking while it runs cannot make
    two reads disagree (repeatable read on Postgres, one read transaction on SQLite)."""
    async with read_snapshot(engine) as conn:
        return await verify(conn, account_id)


async def verify(conn: AsyncConnection, account_id: str | None = None) -> Report:
    """Every difference between what the journal, its projections, the lots and the
    usage ledger say (of one account, or of all)."""
    accounts = {
        row.id: row
        for row in await conn.execute(
            _where(select(credit_accounts).order_by(_a.id), _a.id, account_id)
        )
    }
    report = Report(accounts=len(accounts))
    journal = await _journal(conn, account_id)
    report.transactions = sum(sum(n for n, _ in kinds.values()) for kinds in journal.values())
    report.posts = sum(kinds.get("post", (0, ZERO))[0] for kinds in journal.values())
    found = report.differences
    found += await _legs(conn, account_id)
    found += _unknown_accounts(journal, accounts)
    found += _projections(journal, accounts)
    found += await _posts(conn, journal, accounts, account_id)
    found += await _lots(conn, journal, accounts, account_id)
    found.sort(key=lambda d: (d.account_id, d.check))
    return report


# --- the journal itself -----------------------------------------------------------------

Journal = dict[str, dict[str, tuple[int, Decimal]]]  # account → kind → (count, sum)


async def _journal(conn: AsyncConnection, account_id: str | None) -> Journal:
    query = select(_t.account_id, _t.kind, func.count(), func.sum(_t.amount)).group_by(
        _t.account_id, _t.kind
    )
    journal: Journal = defaultdict(dict)
    for account, kind, count, total in await conn.execute(_where(query, _t.account_id, account_id)):
        journal[account][kind] = (int(count), Decimal(total or 0))
    return journal


def _totals(kinds: dict[str, tuple[int, Decimal]]) -> tuple[Decimal, Decimal]:
    """(funded, spent) as the journal has them."""
    funded = sum((total for kind, (_, total) in kinds.items() if kind != "post"), ZERO)
    spent = -kinds.get("post", (0, ZERO))[1]
    return funded, spent


async def _legs(conn: AsyncConnection, account_id: str | None) -> list[Difference]:
    found: list[Difference] = []
    # Two legs summing to zero.
    count, total = func.count(_l.leg), func.sum(_l.amount)
    query = (
        select(_t.seq, _t.account_id, _t.kind, _t.key, count, total)
        .select_from(credit_transactions.outerjoin(credit_legs, _l.transaction_seq == _t.seq))
        .group_by(_t.seq, _t.account_id, _t.kind, _t.key)
        .having(or_(count != 2, total.is_(None), total != literal(0, _t.amount.type)))
        .order_by(_t.seq)
    )
    for seq, account, kind, key, legs, summed in await conn.execute(
        _where(query, _t.account_id, account_id)
    ):
        found.append(
            Difference(
                account,
                "legs",
                "2 legs summing to 0",
                f"{legs} leg(s) summing to {format_usd(Decimal(summed or 0))}",
                f"transaction {seq} ({kind} {key})",
            )
        )
    # The account's own leg: its ledger account, the transaction's amount.
    own = credit_legs.alias("own")
    query = (
        select(
            _t.seq, _t.account_id, _t.kind, _t.key, _t.amount, own.c.ledger_account, own.c.amount
        )
        .join(own, and_(own.c.transaction_seq == _t.seq, own.c.leg == 0))
        .where(
            or_(
                own.c.ledger_account != literal("credits:") + _t.account_id,
                own.c.amount != _t.amount,
            )
        )
        .order_by(_t.seq)
    )
    for seq, account, kind, key, amount, leg_account, leg_amount in await conn.execute(
        _where(query, _t.account_id, account_id)
    ):
        found.append(
            Difference(
                account,
                "legs",
                f"{ledger_account(account)} {format_usd(amount)}",
                f"{leg_account} {format_usd(leg_amount)}",
                f"transaction {seq} ({kind} {key}): the account's leg",
            )
        )
    # The counter-account's leg: where the money came from or went to.
    query = (
        select(
            _t.account_id, _t.kind, _t.category, _l.ledger_account, func.count(), func.min(_t.seq)
        )
        .join(credit_legs, and_(_l.transaction_seq == _t.seq, _l.leg == 1))
        .group_by(_t.account_id, _t.kind, _t.category, _l.ledger_account)
    )
    for account, kind, category, leg_account, n, first in await conn.execute(
        _where(query, _t.account_id, account_id)
    ):
        expected = counterpart(kind, category) if kind in KINDS else "a known kind"
        if leg_account != expected:
            found.append(
                Difference(
                    account,
                    "legs",
                    expected,
                    leg_account,
                    f"{n} {kind} transaction(s), the first {first}: the counter-account's leg",
                )
            )
    if account_id is None:
        # Legs whose transaction is gone (nothing names their account any more).
        query = (
            select(_l.transaction_seq, func.count(), func.sum(_l.amount))
            .select_from(credit_legs.outerjoin(credit_transactions, _t.seq == _l.transaction_seq))
            .where(_t.seq.is_(None))
            .group_by(_l.transaction_seq)
        )
        for seq, n, summed in await conn.execute(query):
            found.append(
                Difference(
                    "-",
                    "legs",
                    "no leg without its transaction",
                    f"{n} leg(s) summing to {format_usd(Decimal(summed or 0))}",
                    f"transaction {seq} is not in the journal",
                )
            )
    return found


def _unknown_accounts(journal: Journal, accounts: dict[str, Any]) -> list[Difference]:
    return [
        Difference(
            account,
            "account",
            "a credit account",
            "none",
            f"{sum(n for n, _ in kinds.values())} transaction(s) name it",
        )
        for account, kinds in journal.items()
        if account not in accounts
    ]


def _projections(journal: Journal, accounts: dict[str, Any]) -> list[Difference]:
    found = []
    for account_id, row in accounts.items():
        funded, spent = _totals(journal.get(account_id, {}))
        for name, expected, stored in (
            ("funded", funded, row.funded),
            ("spent", spent, row.spent),
        ):
            if stored != expected:
                found.append(
                    Difference(
                        account_id,
                        name,
                        usd(expected),
                        usd(stored),
                        f"the projection is off by {format_usd(stored - expected)}",
                    )
                )
    return found


# --- posts and the usage ledger ---------------------------------------------------------


async def _posts(
    conn: AsyncConnection, journal: Journal, accounts: dict[str, Any], account_id: str | None
) -> list[Difference]:
    paid = case((_u.cost != literal(0, _u.cost.type), 1), else_=0)
    query = select(_u.credit_account_id, func.count(), func.sum(paid), func.sum(_u.cost)).where(
        _u.credit_account_id.is_not(None)
    )
    query = _where(query, _u.credit_account_id, account_id).group_by(_u.credit_account_id)
    ledger = {
        account: (int(records), int(nonzero or 0), Decimal(cost or 0))
        for account, records, nonzero, cost in await conn.execute(query)
    }
    named = {
        "missing": await _ids(conn, _unposted(), account_id),
        "extra": await _ids(conn, _uncovered_posts(), account_id),
        "amount differs": await _ids(conn, _differing_posts(), account_id),
    }
    found = []
    for account in sorted(accounts.keys() | ledger.keys()):
        records, expected_n, expected_sum = ledger.get(account, (0, 0, ZERO))
        if account not in accounts:
            found.append(
                Difference(
                    account,
                    "posts",
                    "a credit account",
                    "none",
                    f"{records} usage record(s) name it as the paying account",
                )
            )
            continue
        posts_n, posts_sum = journal.get(account, {}).get("post", (0, ZERO))
        details = [_listed(what, ids[account]) for what, ids in named.items() if ids.get(account)]
        if -posts_sum != expected_sum or details:
            found.append(
                Difference(
                    account,
                    "posts",
                    f"{usd(expected_sum)} in {expected_n} paid record(s) (usage ledger)",
                    f"{usd(-posts_sum)} in {posts_n} post(s) (journal)",
                    "; ".join(details),
                )
            )
    return found


def _unposted() -> Select[Any]:
    """Paid records whose post is not in the journal (on the account the record names)."""
    post = and_(
        _t.key == _u.credit_post,
        _t.account_id == _u.credit_account_id,
        _t.kind == "post",
    )
    return (
        select(_u.credit_account_id, _u.id)
        .select_from(usage_records.outerjoin(credit_transactions, post))
        .where(
            _u.credit_account_id.is_not(None),
            _u.cost != literal(0, _u.cost.type),
            _t.seq.is_(None),
        )
        .order_by(_u.credit_account_id, _u.id)
    )


def _uncovered_posts() -> Select[Any]:
    """Posts that no paid record of their account names (by key)."""
    record = and_(
        _u.credit_post == _t.key,
        _u.credit_account_id == _t.account_id,
        _u.cost != literal(0, _u.cost.type),
    )
    return (
        select(_t.account_id, _t.key)
        .select_from(credit_transactions.outerjoin(usage_records, record))
        .where(_t.kind == "post", _u.id.is_(None))
        .order_by(_t.account_id, _t.seq)
    )


def _differing_posts() -> Select[Any]:
    """Posts whose amount is not minus the costs of the records that name them."""
    record = and_(_u.credit_post == _t.key, _u.credit_account_id == _t.account_id)
    return (
        select(_t.account_id, _t.key)
        .join(usage_records, record)
        .where(_t.kind == "post")
        .group_by(_t.seq, _t.account_id, _t.key, _t.amount)
        .having(_t.amount + func.sum(_u.cost) != literal_column("0"))
        .order_by(_t.account_id, _t.seq)
    )


async def _ids(
    conn: AsyncConnection, query: Select[Any], account_id: str | None
) -> dict[str, list[str]]:
    column = query.selected_columns[0]
    ids: dict[str, list[str]] = defaultdict(list)
    for account, ident in await conn.execute(_where(query, column, account_id).limit(_FETCHED)):
        ids[account].append(ident)
    return ids


def _listed(what: str, ids: list[str]) -> str:
    more = len(ids) - LISTED
    shown = ", ".join(ids[:LISTED])
    suffix = f" and {more}{'+' if len(ids) >= _FETCHED else ''} more" if more > 0 else ""
    return f"{what}: {shown}{suffix}"


# --- lots -------------------------------------------------------------------------------


async def _lots(
    conn: AsyncConnection, journal: Journal, accounts: dict[str, Any], account_id: str | None
) -> list[Difference]:
    active = await conn.execute(
        _where(
            select(_lot.account_id, func.sum(_lot.remaining))
            .where(_lot.status == "active")
            .group_by(_lot.account_id),
            _lot.account_id,
            account_id,
        )
    )
    held = {account: Decimal(total or 0) for account, total in active}
    pending = await _pending(conn, account_id)
    found = []
    for account, row in accounts.items():
        funded, spent = _totals(journal.get(account, {}))
        on_lots, drawing = held.get(account, ZERO), pending.get(account, ZERO)
        lots_side = on_lots - row.debt + drawing
        if lots_side != funded - spent:
            found.append(
                Difference(
                    account,
                    "lots",
                    f"{usd(funded - spent)} (journal balance)",
                    usd(lots_side),
                    f"active lots hold {format_usd(on_lots)}, debt {format_usd(row.debt)}, "
                    f"not yet drawn {format_usd(drawing)}",
                )
            )
        if row.debt < 0:
            found.append(Difference(account, "debt", "0 USD or more", usd(row.debt)))
        elif row.debt > 0 and held.get(account, ZERO) > 0:
            found.append(
                Difference(
                    account,
                    "debt",
                    "no debt while lots have credit",
                    f"debt {usd(row.debt)}",
                    f"active lots hold {format_usd(held[account])}",
                )
            )
    found += await _each_lot(conn, account_id)
    return found


async def _pending(conn: AsyncConnection, account_id: str | None) -> dict[str, Decimal]:
    """Per account: what allocation has still to draw from (or give back to) the lots —
    the movements after ``allocated_seq`` that are not funding put on a lot when booked
    (a purchase or grant of a positive amount) nor an expiry (which empties its lot)."""
    on_a_lot = or_(
        _t.kind == "expire",
        and_(_t.kind.in_(_FUNDING), _t.amount >= literal(0, _t.amount.type)),
    )
    query = (
        select(_t.account_id, func.sum(_t.amount))
        .join(credit_accounts, _a.id == _t.account_id)
        .where(_t.seq > _a.allocated_seq, not_(on_a_lot))
        .group_by(_t.account_id)
    )
    rows = await conn.execute(_where(query, _t.account_id, account_id))
    return {account: Decimal(total or 0) for account, total in rows}


async def _each_lot(conn: AsyncConnection, account_id: str | None) -> list[Difference]:
    funding = (
        select(
            _t.account_id.label("account_id"),
            _t.lot_id.label("lot_id"),
            func.count().label("n"),
            func.sum(_t.amount).label("total"),
        )
        .where(_t.kind.in_(_FUNDING), _t.lot_id.is_not(None))
        .group_by(_t.account_id, _t.lot_id)
        .subquery()
    )
    funds = and_(funding.c.lot_id == _lot.id, funding.c.account_id == _lot.account_id)
    query = (
        select(credit_lots, funding.c.n, funding.c.total)
        .select_from(credit_lots.outerjoin(funding, funds))
        .order_by(_lot.account_id, _lot.created_at, _lot.id)
    )
    found = []
    for lot in await conn.execute(_where(query, _lot.account_id, account_id)):
        problem = _lot_problem(lot)
        if problem is not None:
            expected, stored = problem
            found.append(Difference(lot.account_id, "lot", expected, stored, f"lot {lot.id}"))
    # Funding that names a lot there is not (or one of another account).
    query = (
        select(_t.account_id, _t.seq, _t.kind, _t.lot_id)
        .select_from(
            credit_transactions.outerjoin(
                credit_lots, and_(_lot.id == _t.lot_id, _lot.account_id == _t.account_id)
            )
        )
        .where(_t.kind.in_(_FUNDING), _t.lot_id.is_not(None), _lot.id.is_(None))
        .order_by(_t.seq)
    )
    for account, seq, kind, lot_id in await conn.execute(_where(query, _t.account_id, account_id)):
        found.append(
            Difference(
                account,
                "lot",
                f"lot {lot_id} of this account",
                "no such lot",
                f"transaction {seq} ({kind}) funds it",
            )
        )
    return found


def _lot_problem(lot: Any) -> tuple[str, str] | None:
    """(expected, found) for what does not hold of one lot, or ``None``."""
    n, total = int(lot.n or 0), Decimal(lot.total or 0)
    if lot.status not in _LOT_STATUSES:
        return "status scheduled, active or expired", f"status {lot.status}"
    if lot.remaining < 0:
        return "remaining 0 USD or more", f"remaining {usd(lot.remaining)}"
    if lot.status == "scheduled":
        if n:
            return "not funded before it takes effect", f"{n} funding transaction(s)"
        if lot.remaining != lot.amount:
            return f"remaining {usd(lot.amount)} (untouched)", f"remaining {usd(lot.remaining)}"
        return None
    if lot.status == "expired" and lot.remaining != 0:
        return "remaining 0 USD once expired", f"remaining {usd(lot.remaining)}"
    if n != 1 or total != lot.amount:
        return f"funded once by {usd(lot.amount)}", f"{n} funding transaction(s), {usd(total)}"
    return None
