"""Process-wide fault knobs for the dev upstream, fixed at start-up.

These are the flags of ``tollhouse dev-upstream``, one field per flag. Faults that a
single test wants for a few requests go through ``POST /_dev/scenario`` instead
(see ``state.py``), so one running server can serve many tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DevUpstreamOptions:
    """How the dev upstream misbehaves, for every request. Call forms::

        DevUpstreamOptions(latency_ms=20, chunk_delay_ms=5)
        DevUpstreamOptions(fail_status=503, fail_every=10)   # requests 10, 20, ... fail
        DevUpstreamOptions(api_key="sk-dev")                 # Bearer or x-api-key required

    Invalid combinations raise ``ValueError`` naming the fix, so the CLI can print it.
    """

    latency_ms: float = 0.0
    """Added before the first byte of every ``/v1`` response (errors included)."""
    chunk_delay_ms: float = 0.0
    """Pause before each content chunk of a stream (word or tool-argument fragment)."""
    fail_status: int | None = None
    """Answer inference requests with this status and an error body in their wire format."""
    fail_every: int = 0
    """With ``fail_status``: fail only every Nth inference request (1-based), 0 = all."""
    disconnect_after_chunks: int | None = None
    """Streams drop the connection after N content chunks: no final chunk, no usage."""
    api_key: str | None = field(default=None, repr=False)
    """When set, ``/v1`` requests must carry it as Bearer token or ``x-api-key``."""

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0 (use 0 for no added latency)")
        if self.chunk_delay_ms < 0:
            raise ValueError("chunk_delay_ms must be >= 0 (use 0 to stream at full speed)")
        if self.fail_status is not None and not 400 <= self.fail_status <= 599:
            raise ValueError(
                f"fail_status must be an HTTP error status 400-599, not {self.fail_status}"
            )
        if self.fail_every < 0:
            raise ValueError("fail_every must be >= 0 (0 fails every request)")
        if self.fail_every > 0 and self.fail_status is None:
            raise ValueError(
                "fail_every needs fail_status (e.g. --fail-status 503 --fail-every 10)"
            )
        if self.disconnect_after_chunks is not None and self.disconnect_after_chunks < 0:
            raise ValueError("disconnect_after_chunks must be >= 0")
        if self.api_key == "":
            raise ValueError("api_key must not be empty (omit it to accept any key)")
