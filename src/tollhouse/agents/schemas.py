"""Bodies of the session API (``/v1/session/…``; docs/agents.md)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictStr

from tollhouse.web.query import Count, Filter, Query
from tollhouse.web.responses import Reply, Time
from tollhouse.web.validation import Body

SessionId = Annotated[StrictStr, Field(pattern=r"^ses_[A-Za-z0-9]{8,64}$")]


class Attachment(Body):
    name: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    media_type: Annotated[StrictStr, Field(max_length=128)] | None = None
    text: Annotated[StrictStr, Field(max_length=1_000_000)] | None = None
    url: Annotated[StrictStr, Field(max_length=4096)] | None = None


class MessageBody(Body):
    session_id: SessionId | None = Field(
        default=None, description="the session to continue; none: a new one"
    )
    persona_id: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    message: Annotated[StrictStr, Field(min_length=1, max_length=1_000_000)]
    attachments: Annotated[list[Attachment], Field(max_length=32)] | None = None
    metadata: (
        Annotated[
            dict[StrictStr, Annotated[StrictStr, Field(max_length=1024)]], Field(max_length=32)
        ]
        | None
    ) = None


class Accepted(Reply):
    session_id: str
    event_id: str


class EventsQuery(Query):
    after: Filter = Field(default=None, description="an event id: what followed it, oldest first")
    limit: Annotated[int, Count(default=100, high=1000)] = Field(default=100)


class EventRead(Reply):
    seq: int
    event_id: str
    kind: str
    type: str
    event: dict[str, Any]
    created_at: Time


class EventPage(Reply):
    session_id: str
    events: list[EventRead]
    count: int
