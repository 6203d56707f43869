"""Usage records: the value the gateway writes, and the admin API's view of them
(``GET /api/usage``: its query and its answer)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, WithJsonSchema

from tollhouse.web.query import Amount, Count, Filter, Moment, Query
from tollhouse.web.responses import Exact, Reply, Time

# refused: a key's request turned away before any provider saw it (a budget, a rate
# limit, a policy, no credit), recorded at no cost so that the log shows it.
Status = Literal["success", "error", "cancelled", "refused"]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request's consumption, exactly as the ledger stores it."""

    id: str
    created_at: datetime
    endpoint: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: Decimal
    priced: bool
    latency_ms: float
    status: Status
    http_status: int
    streamed: bool
    key_id: str | None = None
    team_id: str | None = None
    customer_id: str | None = None
    upstream_request_id: str | None = None
    error: str | None = None
    credit_account_id: str | None = None  # the prepaid account that paid, if any
    credit_post: str | None = None  # set when written: the journal post that charged it
    session_id: str | None = None  # an agent session's model call
    persona_id: str | None = None

    def row(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every field, and this runs per record.
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(UsageRecord))


MAX_LIMIT = 1000


class UsageQuery(Query):
    key_id: Filter = Field(default=None, description="only this virtual key")
    virtual_key_id: Filter = Field(default=None, description="the same as key_id (key_id wins)")
    team_id: Filter = Field(default=None, description="only this team")
    customer_id: Filter = Field(default=None, description="only this customer")
    credit_account_id: Filter = Field(default=None, description="only this prepaid account")
    credit_post: Filter = Field(default=None, description="only the requests of this post (key)")
    session_id: Filter = Field(default=None, description="only this agent session's model calls")
    model: Filter = Field(default=None, description="only this model")
    status: Annotated[
        Status | None,
        BeforeValidator(lambda v: v or None),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "enum": list(get_args(Status))},
                    {"type": "string", "maxLength": 0},  # empty: no filter
                ]
            }
        ),
    ] = Field(default=None, description="only records of this status")
    min_cost: Amount = Field(default=None, description="only records costing at least this")
    max_cost: Amount = Field(default=None, description="only records costing at most this")
    since: Moment = Field(default=None, description="from this time on")
    until: Moment = Field(default=None, description="before this time")
    limit: Annotated[int, Count(default=50, high=MAX_LIMIT)] = Field(
        default=50, description="how many, newest first"
    )
    cursor: Filter = Field(default=None, description="next_cursor of the previous page (opaque)")


class UsageRecordRead(Reply):
    """One request's consumption as the ledger stores it; ``cost`` exact (USD)."""

    id: str
    created_at: Time
    key_id: str | None
    team_id: str | None
    customer_id: str | None
    endpoint: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: Exact
    priced: bool
    latency_ms: float
    status: Status
    http_status: int
    streamed: bool
    upstream_request_id: str | None
    error: str | None
    credit_account_id: str | None
    credit_post: str | None = Field(
        description="key of the credit journal post that charged this request to "
        "credit_account_id (one post per account per ledger batch)"
    )
    session_id: str | None = Field(
        default=None, description="the agent session whose model call this was"
    )
    persona_id: str | None = Field(default=None, description="that session's persona")

    @classmethod
    def from_row(cls, row: Any) -> UsageRecordRead:
        return cls.model_validate(row._mapping)


class UsagePage(Reply):
    usage: list[UsageRecordRead]
    count: int
    total: int = Field(description="records that match the filters, on every page")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null: last")
