"""Balance alerts: ``credit_low``, ``credit_depleted`` and ``credit_recovered``, once per
crossing, on any number of replicas.

An account is in one of three states, kept as ``alert_state``:

- ``depleted``: its balance is at or below 0 — the prepaid credit is used up (with an
  overdraft limit, requests still pass until ``−overdraft_limit``);
- ``low``: above 0 but below ``low_balance`` (only when one is set);
- ``ok``: otherwise.

The balance is the **settled** one: the journal's ``funded − spent`` as committed, what
every replica reads alike. Reservations of requests in flight are left out on purpose:
they come and go within a request, and replicas see different parts of them, so
counting them would make alerts flap between replicas.

A crossing is a change of state, and fires the event of where it went: into ``low``,
``credit_low``; into ``depleted``, ``credit_depleted`` (from ``ok`` straight to
``depleted``, that one alone); up out of ``depleted`` or ``low``, ``credit_recovered``.
The state moves by an UPDATE conditional on the state and crossing count read
(``… WHERE alert_state = :old AND alert_crossings = :n``): when replicas see the same
crossing, one UPDATE matches and only its transaction writes the event (with its outbox
deliveries, through the ``AlertSink``); the dedup key ``credit:<account>:<n>`` is unique
besides.

An account that has never been funded and never spent is left alone: a new, empty
account is not "depleted".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.credits.models import credit_accounts, credit_transactions
from tollhouse.credits.service import Balance
from tollhouse.governance.models import customers, teams, virtual_keys

State = Literal["ok", "low", "depleted"]
Event = Literal["credit_low", "credit_depleted", "credit_recovered"]
ZERO = Decimal(0)
_a = credit_accounts.c
_x = credit_transactions.c
_RANK: dict[str, int] = {"depleted": 0, "low": 1, "ok": 2}
_OWNERS = {"customer": customers, "team": teams, "key": virtual_keys}


def state_of(settled: Decimal, low_balance: Decimal | None) -> State:
    """The alert state of an account whose settled balance is ``settled``."""
    if settled <= ZERO:
        return "depleted"
    if low_balance is not None and settled < low_balance:
        return "low"
    return "ok"


def stale(account: Any) -> bool:
    """Whether the account's settled balance is in another state than it is in."""
    return bool(
        state_of(account.funded - account.spent, account.low_balance) != account.alert_state
    )


def event_of(old: str, new: State) -> Event:
    if _RANK.get(old, 2) < _RANK[new]:
        return "credit_recovered"
    return "credit_depleted" if new == "depleted" else "credit_low"


async def used(conn: AsyncConnection, account: Any) -> bool:
    """Whether the journal holds a movement of the account (one that never had one does
    not alert): its projections say so, or else one indexed look."""
    if account.funded != ZERO or account.spent != ZERO:
        return True
    query = select(_x.seq).where(_x.account_id == account.id).limit(1)
    return (await conn.execute(query)).first() is not None


def ever_used() -> Any:
    """``used`` as a SQL condition on ``credit_accounts`` rows (the watch's scan)."""
    moved = select(_x.seq).where(_x.account_id == _a.id).exists()
    return or_(_a.funded != ZERO, _a.spent != ZERO, moved)


@dataclass(frozen=True, slots=True)
class Crossing:
    """An account's balance crossed a mark: what the alert says."""

    account_id: str
    owner_type: str  # customer | team | key
    owner_id: str
    owner_name: str | None
    event: Event
    previous: str  # the state it left
    state: State  # the state it entered
    threshold: Decimal  # the mark crossed: low_balance, or 0
    balance: Decimal  # settled: funded − spent
    reserved: Decimal  # held by requests in flight, as this replica saw them
    available: Decimal  # balance − reserved
    low_balance: Decimal | None
    overdraft_limit: Decimal
    crossing: int  # the account's n-th crossing
    at: datetime

    @property
    def dedup_key(self) -> str:
        return f"credit:{self.account_id}:{self.crossing}"

    @property
    def level(self) -> str:
        return {"credit_depleted": "critical", "credit_low": "warning"}.get(self.event, "info")


class AlertSink(Protocol):
    """Where crossings go: the alerts writer, which stores the event and its outbox
    deliveries in the caller's transaction (``credits`` cannot import ``alerts``)."""

    async def credit_crossed(self, conn: AsyncConnection, crossing: Crossing) -> bool: ...


def _mark(old: str, new: State, low_balance: Decimal | None) -> Decimal:
    """The mark a move from ``old`` to ``new`` crossed: 0 down into ``depleted`` and up
    out of it into ``low``; else ``low_balance`` (0 without one)."""
    if new == "depleted" or (new == "low" and old == "depleted"):
        return ZERO
    return low_balance if low_balance is not None else ZERO


async def owner_name(conn: AsyncConnection, owner_type: str, owner_id: str) -> str | None:
    table = _OWNERS.get(owner_type)
    if table is None:
        return None
    found = await conn.execute(select(table.c.name).where(table.c.id == owner_id))
    name = found.scalar()
    return None if name is None else str(name)


async def cross(
    conn: AsyncConnection, account: Any, balance: Balance, sink: AlertSink, now: datetime
) -> Crossing | None:
    """Move ``account`` (a row as read, ``used``) to the state its settled balance is
    in, and alert through ``sink``, in the caller's transaction; ``None`` when the state
    is unchanged or another writer moved it first. The UPDATE is its first statement."""
    settled = account.funded - account.spent
    new = state_of(settled, account.low_balance)
    if new == account.alert_state:
        return None
    moved = await conn.execute(
        update(credit_accounts)
        .where(
            _a.id == account.id,
            _a.alert_state == account.alert_state,
            _a.alert_crossings == account.alert_crossings,
        )
        .values(alert_state=new, alert_crossings=_a.alert_crossings + 1)
        .returning(_a.alert_crossings)
    )
    crossing = moved.scalar()
    if crossing is None:
        return None  # another replica (or a newer read) moved it
    found = Crossing(
        account_id=account.id,
        owner_type=account.owner_type,
        owner_id=account.owner_id,
        owner_name=await owner_name(conn, account.owner_type, account.owner_id),
        event=event_of(account.alert_state, new),
        previous=account.alert_state,
        state=new,
        threshold=_mark(account.alert_state, new, account.low_balance),
        balance=settled,
        reserved=balance.reserved,
        available=settled - balance.reserved,
        low_balance=account.low_balance,
        overdraft_limit=account.overdraft_limit,
        crossing=int(crossing),
        at=now,
    )
    await sink.credit_crossed(conn, found)
    return found
