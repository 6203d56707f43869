"""Hot session metadata in Redis (docs/agents.md, *Sessions*).

Every session route first checks that the session is the caller's tenant's. ``owned``
does that check. It reads the session from one Redis key (``tollhouse:session:<id>``,
JSON, expiring after ``session_cache_ttl_s``). On a miss it reads ``agent_sessions`` and
fills the key. Opening a session fills it too.

There is no invalidation besides the TTL, because nothing cached ever changes. The
cached columns (id, tenant, key, persona, created_at) are written once, when the session
is opened. A session is never re-owned and never deleted, so an entry cannot disagree
with the database. The columns that do change (``status``, ``last_seq``) are not cached.
The TTL only keeps sessions nobody uses from holding memory in Redis.

Ownership is decided as ``sessions.get`` decides it. The cached tenant must equal the
caller's, or the answer is the same 404 (never a 403 that would say the session exists).

Without ``redis_url`` the entries are kept in this process instead (the most recently
used ``_LOCAL`` sessions): since they never change, a copy per process cannot go stale
either. With a TTL of 0 nothing is cached and every check reads the database. A Redis
that fails or times out (``redis_timeout_s``) is logged as a warning
and the database answers instead: the cache never turns a request into a 5xx.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.agents import sessions

if TYPE_CHECKING:
    from redis.asyncio import Redis  # the optional redis extra

log = logging.getLogger("tollhouse.agents")
_LOCAL = 10_000  # sessions kept in this process when there is no Redis


@dataclass(frozen=True, slots=True)
class SessionMeta:
    """What of a session never changes: what the routes need to check its owner and
    answer."""

    id: str
    tenant_kind: str
    tenant_id: str
    key_id: str | None
    persona_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> SessionMeta:
        """From an ``agent_sessions`` row."""
        return cls(
            id=row.id,
            tenant_kind=row.tenant_kind,
            tenant_id=row.tenant_id,
            key_id=row.key_id,
            persona_id=row.persona_id,
            created_at=row.created_at,
        )

    def encode(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "tenant_kind": self.tenant_kind,
                "tenant_id": self.tenant_id,
                "key_id": self.key_id,
                "persona_id": self.persona_id,
                "created_at": self.created_at.isoformat(),
            }
        )

    @classmethod
    def decode(cls, raw: str | bytes) -> SessionMeta:
        fields = json.loads(raw)
        fields["created_at"] = datetime.fromisoformat(fields["created_at"])
        return cls(**fields)


class CacheDown(Exception):
    """Redis failed or timed out (logged): read the database, and fill nothing."""


class SessionCache:
    """One Redis key per session, set with a TTL; without Redis, a bounded map in this
    process; with a TTL of 0, a cache that holds nothing."""

    def __init__(self, redis: Redis | None, ttl_s: int) -> None:
        self._redis = redis if ttl_s > 0 else None
        self._ttl_s = ttl_s
        self._local: OrderedDict[str, SessionMeta] | None = (
            OrderedDict() if redis is None and ttl_s > 0 else None
        )

    @staticmethod
    def key(session_id: str) -> str:
        return f"tollhouse:session:{session_id}"

    async def get(self, session_id: str) -> SessionMeta | None:
        """The cached session, or ``None`` (not cached, or no cache); ``CacheDown`` when
        Redis fails."""
        if self._local is not None:
            found = self._local.get(session_id)
            if found is not None:
                self._local.move_to_end(session_id)
            return found
        if self._redis is None:
            return None
        try:
            raw = await self._redis.get(self.key(session_id))
        except Exception as exc:  # Redis away or too slow
            log.warning(
                "session cache not read; reading the database",
                extra={"session_id": session_id, "error": repr(exc)},
            )
            raise CacheDown from exc
        if raw is None:
            return None
        try:
            return SessionMeta.decode(raw)
        except (ValueError, TypeError, KeyError) as exc:  # a miss: the fill overwrites it
            log.warning(
                "session cache entry unreadable; reading the database",
                extra={"session_id": session_id, "error": repr(exc)},
            )
            return None

    async def put(self, session: SessionMeta) -> None:
        if self._local is not None:
            self._local[session.id] = session
            if len(self._local) > _LOCAL:
                self._local.popitem(last=False)
            return
        if self._redis is None:
            return
        try:
            await self._redis.set(self.key(session.id), session.encode(), ex=self._ttl_s)
        except Exception as exc:  # the next check reads the database again
            log.warning(
                "session cache not written",
                extra={"session_id": session.id, "error": repr(exc)},
            )


class CacheServices(Protocol):
    """What ``owned`` uses of the running service."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def session_cache(self) -> SessionCache: ...


async def owned(services: CacheServices, session_id: str, tenant: tuple[str, str]) -> SessionMeta:
    """The session, if it is ``tenant``'s; a 404 otherwise (whoever else owns it, or if
    nobody does). From the cache, else from the database, which then fills the cache."""
    cache = services.session_cache
    try:
        session = await cache.get(session_id)
    except CacheDown:  # not written either: a Redis that timed out would only time out again
        return await _read(services.engine, session_id, tenant)
    if session is None:
        session = await _read(services.engine, session_id, tenant)
        await cache.put(session)
    elif (session.tenant_kind, session.tenant_id) != tenant:
        raise sessions.not_found(session_id)  # what sessions.get answers
    return session


async def _read(engine: AsyncEngine, session_id: str, tenant: tuple[str, str]) -> SessionMeta:
    async with engine.connect() as conn:
        return SessionMeta.of(await sessions.get(conn, session_id, tenant))
