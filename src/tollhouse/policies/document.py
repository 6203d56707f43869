"""The input document a condition sees (docs/policies.md, *The input document*).

Every field is always present with a value of its type — an empty string, an empty
list, zero — never missing and never null, so that a condition accepted on write (which
is checked against ``SAMPLES``) cannot fail at request time on a field that happens to
be absent. The same document goes to every engine: CEL reads it as maps and lists, Rego
and OPA as JSON ``input``.

::

    action      "llm.request" | "tool.execute" | "sandbox.allocate"
    principal   key {id, name, tags}, team {id, name, tags}, customer {id, name},
                tags (the key's and its team's)
    request     what the caller asked (per action; for llm.request: endpoint, format,
                model, stream, max_output_tokens, input_tokens, messages, tools, user)
    resource    what it would use (llm.request: model, provider, region)
    time        now (RFC 3339, UTC), unix, date, hour, minute, weekday (0 = Sunday)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

Doc = dict[str, Any]

_EMPTY_SCOPE: Doc = {"id": "", "name": "", "tags": []}


def principal(chain: tuple[Any, ...] = ()) -> Doc:
    """The principal part of the document for a key's scope chain (key, team, customer:
    ``admission.snapshot.Scope``s); an anonymous caller has empty ids. Built once per key
    and snapshot, not per request."""
    found: dict[str, Doc] = {}
    for scope in chain:
        found[scope.kind] = {"id": scope.id, "name": scope.name, "tags": list(scope.tags)}
    key = found.get("key", _EMPTY_SCOPE)
    team = found.get("team", _EMPTY_SCOPE)
    customer = found.get("customer", _EMPTY_SCOPE)
    tags = list(dict.fromkeys([*key["tags"], *team["tags"]]))
    return {
        "key": dict(key),
        "team": dict(team),
        "customer": {"id": customer["id"], "name": customer["name"]},
        "tags": tags,
    }


def moment(now: datetime) -> Doc:
    now = now.astimezone(UTC)
    return {
        "now": now.isoformat().replace("+00:00", "Z"),
        "unix": int(now.timestamp()),
        "date": now.date().isoformat(),
        "hour": now.hour,
        "minute": now.minute,
        "weekday": (now.weekday() + 1) % 7,  # CEL's getDayOfWeek: 0 is Sunday
    }


def llm_request(
    *,
    endpoint: str,
    inbound: str,
    model: str,
    stream: bool,
    max_output_tokens: int,
    input_tokens: int,
    messages: int,
    tools: list[str],
    user: str,
) -> Doc:
    return {
        "endpoint": endpoint,
        "format": inbound,
        "model": model,
        "stream": stream,
        "max_output_tokens": max_output_tokens,
        "input_tokens": input_tokens,
        "messages": messages,
        "tools": tools,
        "user": user,
    }


def llm_resource(model: str, provider: str, region: str) -> Doc:
    return {"model": model, "provider": provider, "region": region}


def document(
    action: str, who: Doc, request: Doc, resource: Doc, now: datetime | None = None
) -> Doc:
    """The whole document; ``now`` defaults to the current second."""
    return {
        "action": action,
        "principal": who,
        "request": request,
        "resource": resource,
        "time": moment(now) if now is not None else _this_second(),
    }


_second: tuple[int, Doc] = (-1, {})


def _this_second() -> Doc:
    """``moment`` of now, worked out once a second (decisions read it, never change it)."""
    global _second
    second = int(time.time())
    if _second[0] != second:
        _second = (second, moment(datetime.fromtimestamp(second, UTC)))
    return _second[1]


class Scope:
    """A key, team or customer as ``principal`` reads it (the snapshot's ``Scope`` has
    the same four fields)."""

    def __init__(self, kind: str, ident: str, name: str, tags: tuple[str, ...]) -> None:
        self.kind, self.id, self.name, self.tags = kind, ident, name, tags


def _sample(full: bool) -> Doc:
    chain = (
        (
            Scope("key", "vk_sample", "sample key", ("intern", "eu")),
            Scope("team", "team_sample", "sample team", ("research",)),
            Scope("customer", "cust_sample", "sample customer", ()),
        )
        if full
        else ()
    )
    request = llm_request(
        endpoint="chat" if full else "embeddings",
        inbound="openai" if full else "anthropic",
        model="gpt-4o-mini" if full else "",
        stream=full,
        max_output_tokens=1024 if full else 0,
        input_tokens=250 if full else 0,
        messages=3 if full else 0,
        tools=["get_weather"] if full else [],
        user="user-1" if full else "",
    )
    resource = llm_resource("gpt-4o-mini", "openai", "us") if full else llm_resource("", "", "")
    when = datetime(2026, 11, 29, 18, 30, tzinfo=UTC) if full else datetime(1970, 1, 1, tzinfo=UTC)
    return document("llm.request", principal(chain), request, resource, when)


# What a condition is checked against on write: one document with every list and
# string filled, one with every list empty, every string empty and every number zero.
SAMPLES: tuple[Doc, ...] = (_sample(True), _sample(False))
