"""The input document a condition sees (docs/policies.md, *The input document*).

Every field is always present with a value of its type — an empty string, an empty
list, zero — never missing and never null, so that a condition accepted on write (which
is checked against ``samples``) cannot fail at request time on a field that happens to
be absent. The same document goes to every engine: CEL reads it as maps and lists, Rego
and OPA as JSON ``input``.

::

    action      "llm.request" | "tool.execute" | "sandbox.allocate"
    principal   key {id, name, tags}, team {id, name, tags}, customer {id, name},
                tags (the key's and its team's)
    request     what the caller asked, per action:
                  llm.request       endpoint, format, model, stream, max_output_tokens,
                                    input_tokens, messages, tools, user
                  tool.execute      tool, arguments (JSON text), session, persona
                  sandbox.allocate  track, purpose ("lab" | "tool"), lab_minutes
    resource    what it would use, per action:
                  llm.request       model, provider, region
                  tool.execute      tool, hosts (what the call would reach), sandbox
                  sandbox.allocate  backend
    time        now (RFC 3339 with the offset), unix, date, hour, minute, weekday
                (0 = Sunday), in ``policy_time_zone`` (UTC unless set)
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, tzinfo
from typing import Any

Doc = dict[str, Any]

ACTIONS = ("llm.request", "tool.execute", "sandbox.allocate")

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


def moment(now: datetime, zone: tzinfo = UTC) -> Doc:
    now = now.astimezone(zone)
    stamp = now.isoformat()
    return {
        "now": stamp[:-6] + "Z" if stamp.endswith("+00:00") else stamp,
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


def tool_request(*, tool: str, arguments: Any, session: str, persona: str) -> Doc:
    """A tool call: ``arguments`` as compact JSON text with sorted keys, so a condition
    can look for a string in them (``request.arguments.contains("rm -rf")``) whatever
    their shape."""
    text = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {"tool": tool, "arguments": text, "session": session, "persona": persona}


def tool_resource(*, tool: str, hosts: list[str], sandbox: str) -> Doc:
    """What the call would use: the hosts it would reach (``http_get``'s URL host), the
    sandbox backend it would run in (``""``: none)."""
    return {"tool": tool, "hosts": hosts, "sandbox": sandbox}


def sandbox_request(*, track: str, purpose: str, lab_minutes: int) -> Doc:
    return {"track": track, "purpose": purpose, "lab_minutes": lab_minutes}


def sandbox_resource(*, backend: str) -> Doc:
    return {"backend": backend}


def document(
    action: str,
    who: Doc,
    request: Doc,
    resource: Doc,
    now: datetime | None = None,
    zone: tzinfo = UTC,
) -> Doc:
    """The whole document; ``now`` defaults to the current second."""
    return {
        "action": action,
        "principal": who,
        "request": request,
        "resource": resource,
        "time": moment(now, zone) if now is not None else _this_second(zone),
    }


_second: tuple[int, tzinfo, Doc] = (-1, UTC, {})


def _this_second(zone: tzinfo) -> Doc:
    """``moment`` of now, worked out once a second (decisions read it, never change it)."""
    global _second
    second = int(time.time())
    if _second[0] != second or _second[1] is not zone:
        _second = (second, zone, moment(datetime.fromtimestamp(second, UTC), zone))
    return _second[2]


class Scope:
    """A key, team or customer as ``principal`` reads it (the snapshot's ``Scope`` has
    the same four fields)."""

    def __init__(self, kind: str, ident: str, name: str, tags: tuple[str, ...]) -> None:
        self.kind, self.id, self.name, self.tags = kind, ident, name, tags


def _sample(action: str, full: bool) -> Doc:
    chain = (
        (
            Scope("key", "vk_sample", "sample key", ("intern", "eu")),
            Scope("team", "team_sample", "sample team", ("research",)),
            Scope("customer", "cust_sample", "sample customer", ()),
        )
        if full
        else ()
    )
    request, resource = _ACTION_SAMPLES[action](full)
    when = datetime(2026, 11, 29, 18, 30, tzinfo=UTC) if full else datetime(1970, 1, 1, tzinfo=UTC)
    return document(action, principal(chain), request, resource, when)


def _llm_sample(full: bool) -> tuple[Doc, Doc]:
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
    return request, resource


def _tool_sample(full: bool) -> tuple[Doc, Doc]:
    tool = "http_get" if full else ""
    request = tool_request(
        tool=tool,
        arguments={"url": "https://example.com/"} if full else {},
        session="ses_sample" if full else "",
        persona="helper" if full else "",
    )
    resource = tool_resource(
        tool=tool, hosts=["example.com"] if full else [], sandbox="local" if full else ""
    )
    return request, resource


def _sandbox_sample(full: bool) -> tuple[Doc, Doc]:
    request = sandbox_request(
        track="track-1" if full else "",
        purpose="lab" if full else "",
        lab_minutes=120 if full else 0,
    )
    return request, sandbox_resource(backend="local" if full else "")


_ACTION_SAMPLES = {
    "llm.request": _llm_sample,
    "tool.execute": _tool_sample,
    "sandbox.allocate": _sandbox_sample,
}


def samples(action: str) -> tuple[Doc, ...]:
    """What a condition of a policy on ``action`` is checked against on write: for each
    action it may see (``*``: all of them), one document with every list and string
    filled and one with every list empty, every string empty and every number zero."""
    actions = ACTIONS if action == "*" else (action,)
    return tuple(_sample(a, full) for a in actions for full in (True, False))


SAMPLES: tuple[Doc, ...] = samples("llm.request")
