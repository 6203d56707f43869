"""Bodies of the broker API (``/v1/allocate``, ``/v1/sandboxes/…``) and of its admin
API (``/api/sandboxes…``, ``/api/broker-tokens``); docs/sandboxes.md."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StrictStr

from tollhouse.errors import ValidationFailed
from tollhouse.governance.fields import Tags
from tollhouse.web.query import Count, Filter, Query
from tollhouse.web.responses import Reply, Time
from tollhouse.web.validation import Body, at_most, number, whole

Status = Literal["available", "allocated", "pending_deletion", "deleting", "failed"]
Backend = Literal["local", "static"]
SandboxName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
TokenName = SandboxName
MAX_CREDENTIALS = 32
MAX_SEED = 100

# A track id or an idempotency key: printable, no spaces, bounded (they are stored).
_TRACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")


def track_id(value: str | None, header: str = "X-Track-ID") -> str:
    if not value:
        raise ValidationFailed(f"the {header} header is required", param=header)
    if not _TRACK.fullmatch(value):
        raise ValidationFailed(
            f"{header}: 1 to 128 of letters, digits and _ . : @ / - (starting with a letter "
            "or digit)",
            param=header,
        )
    return value


def idempotency_key(value: str | None) -> str | None:
    return None if value is None else track_id(value, "Idempotency-Key")


class AllocateBody(Body):
    lab_duration_hours: Annotated[float, BeforeValidator(number)] | None = Field(
        default=None,
        gt=0,
        description="how long the lab lasts (the lease adds the grace period); default "
        "sandbox_lab_hours, at most sandbox_max_lab_hours",
    )


class SandboxRead(Reply):
    id: str
    name: str
    backend: Backend
    status: Status
    url: str | None
    external_id: str | None
    track_id: str | None
    purpose: str | None
    allocated_at: Time | None
    expires_at: Time | None
    error: str | None
    created_at: Time
    updated_at: Time

    @classmethod
    def from_row(cls, row: Any) -> SandboxRead:
        mapping = row._mapping  # never the secret, the uid, the token or the key
        return cls.model_validate({name: mapping[name] for name in cls.model_fields})


class SandboxView(Reply):
    """A sandbox as a track sees it: with how to reach it when the track holds it."""

    sandbox: SandboxRead
    credentials: dict[str, str] | None = Field(
        description="a static sandbox's credentials (decrypted for its track only)"
    )


class LeaseRead(SandboxView):
    created: bool = Field(description="a new lease (201), or the track's own again (200)")


class SandboxOne(Reply):
    sandbox: SandboxRead


class SandboxesQuery(Query):
    status: Status | None = None
    backend: Backend | None = None
    track_id: Filter = Field(default=None, description="the track holding the lease")
    limit: Annotated[int, Count(default=100, high=1000)] = Field(default=100)
    cursor: Filter = Field(default=None, description="next_cursor of the previous page")


class SandboxPage(Reply):
    sandboxes: list[SandboxRead]
    count: int
    next_cursor: str | None


class SeedBody(Body):
    count: Annotated[int, BeforeValidator(whole)] = Field(ge=1, le=MAX_SEED)


class Seeded(Reply):
    created: list[str]
    count: int


Credentials = Annotated[
    dict[StrictStr, StrictStr], at_most(MAX_CREDENTIALS), Field(max_length=MAX_CREDENTIALS)
]


class StaticCreate(Body):
    """An environment the operator runs, registered into the pool."""

    name: SandboxName
    url: Annotated[StrictStr, Field(max_length=2048)] | None = None
    external_id: Annotated[StrictStr, Field(min_length=1, max_length=256)] | None = None
    credentials: Credentials | None = Field(
        default=None, description="what a track needs to use it; encrypted at rest"
    )


class StatsRead(Reply):
    total: int
    by_status: dict[str, int]
    by_backend: dict[str, dict[str, int]]
    next_expiry: Time | None = Field(description="the soonest end of a live lease")
    exhausted: int = Field(description="allocations this server refused for want of one")


class ReportRead(Reply):
    expired: int
    deleted: int
    recycled: int
    failed: int
    created: int
    orphans_removed: int
    missing: int


class TokenCreate(Body):
    name: TokenName
    tags: Tags = Field(default_factory=list, description="what sandbox.allocate policies match")


class TokenRead(Reply):
    id: str
    name: str
    hint: str
    tags: list[str]
    created_at: Time
    revoked_at: Time | None

    @classmethod
    def from_row(cls, row: Any) -> TokenRead:
        mapping = row._mapping  # never the hash
        found = {name: mapping[name] for name in cls.model_fields}
        return cls.model_validate({**found, "tags": list(row.tags or [])})


class TokenWritten(Reply):
    token: TokenRead
    value: str = Field(description="the bearer token: shown this once, stored as a hash")


class TokenList(Reply):
    tokens: list[TokenRead]
    count: int


class TokenOne(Reply):
    token: TokenRead
