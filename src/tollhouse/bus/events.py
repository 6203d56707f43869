"""The agents' events: four JSON schemas shipped in the package (``bus/schemas``), one per
kind, each ``additionalProperties: false``, and the topic each kind travels on
(docs/agents.md, *Events*).

Every event is checked on publish (a producer's bug is its caller's error, before
anything is sent) and again on consume (what arrives may come from another version, or
from anyone who can write to the broker): an invalid one is refused with a message
naming the field, counted, and never reaches a handler.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs

from tollhouse.errors import UnprocessableEvent

KINDS = ("conversation_event", "assistant_event", "tool_request", "tool_result")
INBOUND = "conversation.inbound"
OUTBOUND = "conversation.outbound"
TOOL_REQUESTS = "tool.requests"
TOOL_RESULTS = "tool.results"
TOPICS: dict[str, str] = {
    INBOUND: "conversation_event",
    OUTBOUND: "assistant_event",
    TOOL_REQUESTS: "tool_request",
    TOOL_RESULTS: "tool_result",
}


class InvalidEvent(UnprocessableEvent):
    """An event its schema refuses (or no JSON object at all)."""


def schema(kind: str) -> dict[str, Any]:
    """The JSON schema of ``kind``, as shipped."""
    text = resources.files("tollhouse.bus").joinpath("schemas").joinpath(f"{kind}.json").read_text()
    found: dict[str, Any] = json.loads(text)
    return found


@cache
def _validator(kind: str) -> Any:
    return jsonschema_rs.Draft202012Validator(schema(kind), validate_formats=True)


def validate(topic: str, event: Any) -> None:
    """``InvalidEvent`` unless ``event`` is what ``topic`` carries."""
    kind = TOPICS.get(topic)
    if kind is None:
        raise InvalidEvent(f"no topic {topic!r}: the topics are " + ", ".join(TOPICS))
    if not isinstance(event, Mapping):
        raise InvalidEvent(f"a {kind} is a JSON object, not {type(event).__name__}")
    error = next(iter(_validator(kind).iter_errors(dict(event))), None)
    if error is not None:
        where = "/".join(str(part) for part in error.instance_path) or "the event"
        raise InvalidEvent(f"{kind}: {where}: {error.message[:300]}")


def encode(topic: str, event: Mapping[str, Any]) -> bytes:
    """``event`` checked, as the bytes a backend carries."""
    validate(topic, event)
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(topic: str, raw: bytes | str) -> dict[str, Any]:
    """What a backend carried, checked; ``InvalidEvent`` for anything else."""
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {str(exc)[:200]}") from None
    validate(topic, event)
    result: dict[str, Any] = event
    return result


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
