"""Per-track request limits on the broker API: a fixed one-minute window per track.

With Redis (``redis_url``) every replica counts in the same key (``INCR`` and
``EXPIRE`` in one round trip), so a track has its allowance across the deployment; without
it, each server counts its own. A Redis that does not answer lets the request through
and is logged: a broken counter must not take the lab pool down with it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tollhouse.errors import RateLimited

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("tollhouse.sandboxes")
_MAX_TRACKS = 100_000  # tracks counted at once in memory before old windows are dropped


class TrackLimiter:
    def __init__(self, per_minute: int, redis: Redis | None = None) -> None:
        self._per_minute = per_minute
        self._redis = redis
        self._counts: dict[str, tuple[int, int]] = {}  # track -> (minute, count)

    async def hit(self, track_id: str, now: float | None = None) -> None:
        """Count a request of ``track_id``; ``RateLimited`` past its allowance."""
        if not self._per_minute:
            return
        now = time.time() if now is None else now
        minute = int(now // 60)
        count = await self._count(track_id, minute)
        if count > self._per_minute:
            retry = max(1, 60 - int(now % 60))
            raise RateLimited(
                f"track {track_id!r} made more than {self._per_minute} broker requests this "
                f"minute; retry in {retry}s",
                headers={"retry-after": str(retry)},
            )

    async def _count(self, track_id: str, minute: int) -> int:
        if self._redis is not None:
            try:
                return await self._shared(track_id, minute)
            except Exception as exc:  # Redis away: let it through, say so
                log.warning("track limit not counted", extra={"error": str(exc)})
                return 0
        entry = self._counts.get(track_id)
        count = entry[1] + 1 if entry is not None and entry[0] == minute else 1
        if entry is None and len(self._counts) >= _MAX_TRACKS:
            self._counts = {t: e for t, e in self._counts.items() if e[0] == minute}
            if len(self._counts) >= _MAX_TRACKS:
                self._counts.clear()
        self._counts[track_id] = (minute, count)
        return count

    async def _shared(self, track_id: str, minute: int) -> int:
        assert self._redis is not None
        key = f"tollhouse:sandbox-track:{minute}:{track_id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        return int(count)
