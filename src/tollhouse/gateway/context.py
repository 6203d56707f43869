"""What the gateway knows about the caller of one request."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tollhouse.money import ZERO

_PREFIX = ""
_SEQUENCE = itertools.count(1)


def _reseed() -> None:
    """A new prefix for this process; forked workers must not share their parent's, or
    their request ids (the ledger's primary key and the Redis reservation names) collide."""
    global _PREFIX, _SEQUENCE
    _PREFIX = "req_" + os.urandom(8).hex()
    _SEQUENCE = itertools.count(1)


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """64 random bits per process and a counter: unique across replicas without
    coordination, and without a ``getrandom`` system call per request."""
    return f"{_PREFIX}{next(_SEQUENCE):012x}"


@dataclass(frozen=True, slots=True)
class AgentCall:
    """A model call an agent session's conversation worker makes: its budgets claim it
    (``admission/agents.py``) and its usage record names it."""

    session_id: str
    persona_id: str | None


@dataclass(slots=True)
class RequestContext:
    """Identity and timing of one request; governance fills the ids in."""

    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    key_id: str | None = None
    team_id: str | None = None
    customer_id: str | None = None
    credit_account_id: str | None = None  # the prepaid account that pays, if any
    reservation: Any = None  # governance's hold on the worst case, until settled
    cost: Decimal = ZERO  # the exact cost, once the request is recorded
    agent: AgentCall | None = None  # an agent session's model call, if it is one
    recorded: bool = False  # its usage record is written (or queued): one per request

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
