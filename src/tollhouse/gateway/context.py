"""What the gateway knows about the caller of one request."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any


def new_request_id() -> str:
    # 96 random bits: unique without coordination across replicas.
    return "req_" + os.urandom(12).hex()


@dataclass(slots=True)
class RequestContext:
    """Identity and timing of one request; governance fills the ids in."""

    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    key_id: str | None = None
    team_id: str | None = None
    customer_id: str | None = None
    reservation: Any = None  # governance's hold on the worst case, until settled

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
