"""Counters and queued one-off faults: the state behind ``/_dev/stats`` and ``/_dev/scenario``.

Both live on the app instance (never module globals) so that two servers in one test
process cannot see each other's faults. Everything runs on one event loop thread, so
plain integers suffice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import BadRequest
from .options import DevUpstreamOptions
from .validation import is_int

T = TypeVar("T", int, float)


@dataclass
class Stats:
    """Request counters; ``requests`` and ``by_path`` skip ``/_dev/*`` and ``/health``."""

    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    inference_requests: int = 0  # ordinal used by fail_every
    completed: int = 0
    cancelled: int = 0
    failed_injected: int = 0
    disconnected_injected: int = 0
    rejected: int = 0
    in_flight: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "inference_requests": self.inference_requests,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "failed_injected": self.failed_injected,
            "disconnected_injected": self.disconnected_injected,
            "rejected": self.rejected,
            "in_flight": self.in_flight,
        }


@dataclass
class _Entry(Generic[T]):
    value: T
    remaining: int


class FaultQueue(Generic[T]):
    """FIFO of (value, count): each ``take`` uses the oldest entry once."""

    def __init__(self) -> None:
        self._entries: deque[_Entry[T]] = deque()

    def push(self, value: T, count: int) -> None:
        self._entries.append(_Entry(value, count))

    def take(self) -> T | None:
        if not self._entries:
            return None
        entry = self._entries[0]
        entry.remaining -= 1
        if entry.remaining <= 0:
            self._entries.popleft()
        return entry.value

    def clear(self) -> None:
        self._entries.clear()

    def as_json(self) -> list[dict[str, Any]]:
        return [{"value": e.value, "remaining": e.remaining} for e in self._entries]


@dataclass(frozen=True)
class ScenarioSpec:
    """One ``POST /_dev/scenario`` body: faults for the next ``count`` requests."""

    count: int = 1
    fail_status: int | None = None
    latency_ms: float | None = None
    chunk_delay_ms: float | None = None
    disconnect_after_chunks: int | None = None

    @classmethod
    def parse(cls, body: object) -> ScenarioSpec:
        if not isinstance(body, dict):
            raise BadRequest("scenario must be a JSON object")
        known = {"count", "fail_status", "latency_ms", "chunk_delay_ms", "disconnect_after_chunks"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise BadRequest(f"unknown scenario fields {unknown}; known: {sorted(known)}")
        count = body.get("count", 1)
        if not is_int(count) or count < 1:
            raise BadRequest("'count' must be a positive integer", "count")
        fail = body.get("fail_status")
        if fail is not None and (not is_int(fail) or not 400 <= fail <= 599):
            raise BadRequest("'fail_status' must be an HTTP error status 400-599", "fail_status")
        drop = body.get("disconnect_after_chunks")
        if drop is not None and (not is_int(drop) or drop < 0):
            raise BadRequest("'disconnect_after_chunks' must be an integer >= 0")
        delays = {k: body.get(k) for k in ("latency_ms", "chunk_delay_ms")}
        for key, value in delays.items():
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise BadRequest(f"'{key}' must be a number >= 0", key)
        spec = cls(count, fail, delays["latency_ms"], delays["chunk_delay_ms"], drop)
        if spec == cls(count):
            raise BadRequest("scenario sets no fault; give fail_status, latency_ms, ...")
        return spec


@dataclass(frozen=True)
class Plan:
    """The faults one request gets, resolved from options and queued scenarios."""

    latency_ms: float
    fail_status: int | None = None
    chunk_delay_ms: float = 0.0
    disconnect_after_chunks: int | None = None


class Scenarios:
    """Queued faults; a scenario's value replaces the option of the same name."""

    def __init__(self) -> None:
        self.fail: FaultQueue[int] = FaultQueue()
        self.latency: FaultQueue[float] = FaultQueue()
        self.chunk_delay: FaultQueue[float] = FaultQueue()
        self.disconnect: FaultQueue[int] = FaultQueue()

    def add(self, spec: ScenarioSpec) -> None:
        if spec.fail_status is not None:
            self.fail.push(spec.fail_status, spec.count)
        if spec.latency_ms is not None:
            self.latency.push(float(spec.latency_ms), spec.count)
        if spec.chunk_delay_ms is not None:
            self.chunk_delay.push(float(spec.chunk_delay_ms), spec.count)
        if spec.disconnect_after_chunks is not None:
            self.disconnect.push(spec.disconnect_after_chunks, spec.count)

    def clear(self) -> None:
        for queue in (self.fail, self.latency, self.chunk_delay, self.disconnect):
            queue.clear()

    def as_json(self) -> dict[str, Any]:
        return {
            "fail_status": self.fail.as_json(),
            "latency_ms": self.latency.as_json(),
            "chunk_delay_ms": self.chunk_delay.as_json(),
            "disconnect_after_chunks": self.disconnect.as_json(),
        }

    def plan(self, options: DevUpstreamOptions, ordinal: int, streaming: bool) -> Plan:
        """Resolve request number ``ordinal``'s faults, consuming queued ones.

        Latency and failures apply to every inference request; pacing and drops only
        to streams, so a queued drop waits for the next streaming request. A request
        that fails does not consume pacing or drops.
        """
        latency = self.latency.take()
        plan_latency = options.latency_ms if latency is None else latency
        fail = self.fail.take()
        every = options.fail_every
        if fail is None and (every <= 0 or ordinal % every == 0):
            fail = options.fail_status
        if fail is not None or not streaming:
            return Plan(plan_latency, fail)
        delay = self.chunk_delay.take()
        drop = self.disconnect.take()
        return Plan(
            latency_ms=plan_latency,
            chunk_delay_ms=options.chunk_delay_ms if delay is None else delay,
            disconnect_after_chunks=options.disconnect_after_chunks if drop is None else drop,
        )
