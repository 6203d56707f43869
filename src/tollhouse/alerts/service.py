"""Alerts: the writer of threshold crossings, and the notification channels the admin
API manages.

**The writer** (``AlertService``): threshold crossings noticed on the request path,
written off it.

``budget_reached`` (and ``notice``) are synchronous and cheap, called where a settle or
a refusal shows a budget reaching a threshold. A background task writes the events
(``events.record``: once per dedup key across every replica) with their outbox
deliveries. A process remembers the
keys it has written so that a flood of refusals does not become a flood of inserts.

``credit_crossed`` stores a credit balance alert (``balance.py``) in the transaction that
moved the account's alert state, decided by ``credits.alerting``.

**Channels** (the functions below ``AlertService``): every one takes a connection,
never a request; the caller owns the transaction. A channel's ``secret`` and its webhook
or Slack URL are stored encrypted (``crypto.SecretBox``, ``urls``). The history of
alerts and their deliveries is read in ``history``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.alerts import balance, urls
from tollhouse.alerts.channels import Channel, Outcome, send
from tollhouse.alerts.events import BudgetAlert, record
from tollhouse.alerts.models import notification_channels
from tollhouse.alerts.schemas import ChannelCreate, ChannelUpdate, checked_config
from tollhouse.background import BatchQueue
from tollhouse.credits.alerting import Crossing
from tollhouse.crypto import SecretBox, require_box
from tollhouse.errors import NotFound, SecretUnreadable
from tollhouse.money import from_nanos
from tollhouse.thresholds import crossed_marks, exhausted, projected_exhaustion

if TYPE_CHECKING:
    from tollhouse.admission.meter import Counter

log = logging.getLogger("tollhouse.alerts")

_SEEN_MAX = 10_000


class AlertService:
    """The admission engine's ``AlertSink``: passed to it at construction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: BatchQueue[BudgetAlert] = BatchQueue(
            self._write,
            name="tollhouse-alert-writer",
            what="alert events",
            batch=500,
            retry=(Exception,),  # the database is away: keep them and retry
            max_delay_s=5.0,
        )
        self._seen: set[str] = set()
        self.written = 0
        # Notified when new deliveries are waiting (the dispatcher's cue to look now).
        self.on_written: asyncio.Event = asyncio.Event()

    def budget_reached(
        self,
        ids: tuple[str | None, str | None, str | None],
        counter: Counter,
        before: int,
        after: int,
        refused: bool = False,
    ) -> None:
        """Notice every threshold of ``counter``'s budget that a settle from ``before``
        to ``after`` nano-dollars crossed, or that a refusal reached. ``ids`` are the
        request's key, team and customer ids (first, so that the engine binds them once
        per request with ``functools.partial``)."""
        spec = counter.scope.budget
        if spec is None or counter.start is None or counter.end is None:
            return
        if refused:
            reached = exhausted(spec.alert_thresholds)
        else:
            marks = spec.alert_marks
            # Most settles cross nothing: they stay below the first mark or past the last.
            if not marks or after < marks[0][1] or before >= marks[-1][1]:
                return
            reached = crossed_marks(marks, before, after)
        if not reached:
            return
        spend = from_nanos(after)
        now = datetime.now(UTC)
        projected = projected_exhaustion(spend, spec.max_limit, counter.start, counter.end, now)
        key_id, team_id, customer_id = ids
        for threshold in reached:
            self.notice(
                BudgetAlert(
                    budget_id=spec.id,
                    scope_kind=counter.scope.kind,
                    scope_id=counter.scope.id,
                    scope_name=counter.scope.name,
                    threshold=threshold,
                    spend=spend,
                    max_limit=spec.max_limit,
                    window_start=counter.start,
                    window_end=counter.end,
                    refused=refused,
                    projected=projected,
                    channel_ids=spec.alert_channels,
                    key_id=key_id,
                    team_id=team_id,
                    customer_id=customer_id,
                )
            )

    def notice(self, alert: BudgetAlert) -> None:
        key = alert.dedup_key
        if key in self._seen:
            return
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()  # only an optimisation: the database deduplicates
        self._seen.add(key)
        self._queue.put(alert)

    async def credit_crossed(self, conn: AsyncConnection, crossing: Crossing) -> bool:
        """Store a credit balance crossing and its deliveries in the caller's transaction
        (``credits.alerting.AlertSink``); ``wake`` the dispatcher once it commits."""
        stored = await balance.record(conn, crossing, crossing.at) is not None
        if stored:
            self.written += 1
        return stored

    def wake(self) -> None:
        """New deliveries were committed: the dispatcher looks now."""
        self.on_written.set()

    @property
    def pending(self) -> int:
        return self._queue.pending

    async def start(self) -> None:
        await self._queue.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        await self._queue.stop(timeout_s)

    async def flush(self) -> None:
        await self._queue.flush()

    async def _write(self, batch: list[BudgetAlert]) -> None:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            for alert in batch:
                if await record(conn, alert, now) is not None:
                    self.written += 1
        self.on_written.set()


# --- channels -------------------------------------------------------------------------

CHANNEL_NOT_FOUND = "Notification channel not found"


async def get_channel(conn: AsyncConnection, channel_id: str) -> Any:
    """One channel's row; ``NotFound`` if unknown."""
    table = notification_channels
    row = (await conn.execute(select(table).where(table.c.id == channel_id))).first()
    if row is None:
        raise NotFound(CHANNEL_NOT_FOUND)
    return row


async def list_channels(conn: AsyncConnection) -> list[Any]:
    """Every channel, oldest first."""
    query = select(notification_channels).order_by(notification_channels.c.created_at)
    return list((await conn.execute(query)).all())


async def seal_legacy(conn: AsyncConnection, box: SecretBox) -> None:
    """Encrypt URLs an older version stored in plaintext."""
    await urls.seal_stored(conn, box)


def _sealed(
    kind: str, config: dict[str, Any], box: SecretBox | None
) -> tuple[dict[str, Any], str | None]:
    """``config`` with a new URL redacted and its token; a 400 without a secret key."""
    field = urls.FIELDS.get(kind)
    if field is None or urls.is_redacted(config.get(field)):
        return config, None
    return urls.seal(kind, config, require_box(box))


async def create_channel(conn: AsyncConnection, body: ChannelCreate, box: SecretBox | None) -> Any:
    """Store a channel, its config checked against its type; the new row."""
    config, url_secret = _sealed(body.type, checked_config(body.type, body.config), box)
    secret = require_box(box).encrypt(body.secret) if body.secret else None
    now, channel_id = datetime.now(UTC), str(uuid.uuid4())
    await conn.execute(
        insert(notification_channels).values(
            id=channel_id,
            name=body.name,
            type=body.type,
            config=config,
            secret=secret,
            url_secret=url_secret,
            is_default=body.is_default,
            created_at=now,
            updated_at=now,
        )  # fmt: skip
    )
    return await get_channel(conn, channel_id)


async def update_channel(
    conn: AsyncConnection, channel_id: str, body: ChannelUpdate, box: SecretBox | None
) -> Any:
    """Merge ``body`` into the channel (``config`` merges into the stored one); the row."""
    given = body.given()
    row = await get_channel(conn, channel_id)
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    if given.get("name") is not None:
        values["name"] = body.name
    if given.get("is_default") is not None:
        values["is_default"] = body.is_default
    if body.config is not None:
        config = checked_config(row.type, {**row.config, **body.config})
        values["config"], url_secret = _sealed(row.type, config, box)
        if url_secret is not None:  # a new URL; else the stored one is kept
            values["url_secret"] = url_secret
    if "secret" in given:
        values["secret"] = require_box(box).encrypt(body.secret) if body.secret else None
    table = notification_channels
    await conn.execute(update(table).where(table.c.id == channel_id).values(**values))
    return await get_channel(conn, channel_id)


async def delete_channel(conn: AsyncConnection, channel_id: str) -> None:
    """Delete a channel; its deliveries keep its id (``alert_deliveries.channel_id``)."""
    await get_channel(conn, channel_id)
    table = notification_channels
    await conn.execute(delete(table).where(table.c.id == channel_id))


async def send_test(row: Any, box: SecretBox | None, timeout_s: float) -> Outcome:
    """Send a sample event through the channel ``row`` now; what happened. A stored
    secret or URL the server cannot decrypt (no key, or not the key that sealed it) is a
    409 ``secret_unreadable`` saying how to fix it: the request was fine, the server's
    keys are not."""
    secret = None
    if row.secret:
        if box is None:
            raise SecretUnreadable(
                "TOLLHOUSE_SECRET_KEY is not set: the channel's secret, stored encrypted, "
                "is unreadable; set the key that encrypted it, or store the secret again"
            )
        secret = box.decrypt(row.secret)
    config = urls.reveal(row.type, dict(row.config), row.url_secret, box)
    channel = Channel(row.id, row.name, row.type, config, secret)
    now = datetime.now(UTC)
    sample = {
        "event_id": f"test-{uuid.uuid4()}",
        "event": "threshold_crossed",
        "event_group": "team",
        "level": "warning",
        "spend": "80",
        "max_budget": "100",
        "threshold": "0.8",
        "percentage": "80",
        "scope": {"kind": "team", "id": "test", "name": "test-send"},
        "window_start": now.isoformat(),
        "window_end": now.isoformat(),
        "event_message": f"Test alert from Tollhouse for channel '{row.name}'.",
        "test": True,
    }
    async with aiohttp.ClientSession() as session:
        return await send(channel, sample, session, timeout_s)
