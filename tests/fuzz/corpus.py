"""The hostile-input corpus: requests no client should send, each as the exact bytes sent.

Plain data (no fixtures): ``tests/fuzz/test_hostile_inputs.py`` sends it through httpx to
a live gateway; ``test_raw_wire.py`` writes the cases httpx cannot express to a socket.
Every case must be answered below 500, and every refusal in the documented error shape
of its path (``shapes.py``); some cases also name the status they must get.

- ``field_cases``: for every field path of a realistic, valid request body, the body
  with that field replaced by each value of ``HOSTILE_VALUES`` (wrong types, extremes,
  odd unicode, NULs, lone surrogates);
- ``body_cases``: bodies that are not objects, not JSON, not UTF-8, or very deep;
- ``header_cases``: every way of sending a key, malformed;
- ``url_cases``: NULs, percent-escapes and unicode in paths and query strings, odd methods;
- ``webhook_cases``: the signed budget webhook with hostile fields and signatures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
EMBEDDINGS = "/v1/embeddings"
MODELS = "/v1/models"
WEBHOOK = "/api/webhooks/budget"
JSON = {"content-type": "application/json"}

# Each hostile value as the JSON text that replaces a field (raw, so that numbers JSON
# allows but Python floats cannot hold, and escapes such as lone surrogates, go out as is).
HOSTILE_VALUES: dict[str, str] = {
    "null": "null",
    "true": "true",
    "zero": "0",
    "minus-one": "-1",
    "1e308": "1e308",
    "-1e1000000": "-1e1000000",
    "1e1000000": "1e1000000",
    "big-int": "1" + "0" * 400,
    "empty-string": '""',
    "100k-string": json.dumps("x" * 100_000),
    "empty-list": "[]",
    "empty-object": "{}",
    "nested-lists": "[[[[[[[[]]]]]]]]",
    "list-of-objects": '[{"a": 1}, {"b": [2]}]',
    "nul-string": '"a\\u0000b"',
    "lone-surrogate": '"\\ud800"',
    "rtl-override": json.dumps("\u202egpt-4o-mini\u202c"),
    "zero-width": json.dumps("\u200b\u200c\u200d\ufeff"),
    "combining": json.dumps("e" + "\u0301" * 500),
    "emoji-4-byte": json.dumps("\U0001f600\U0001f4a9"),
    "superscript-two": json.dumps("\u00b2"),
    "arabic-digits": json.dumps("\u0661\u0662"),
}

# Realistic, valid bodies: every field of these is replaced in turn.
_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {
            "type": "object",
            "properties": {"word": {"type": "string"}},
            "required": ["word"],
        },
    },
}
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"word": "hi"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a greeting"},
    ],
    "max_tokens": 16,
    "temperature": 0.5,
    "top_p": 1,
    "n": 1,
    "stop": ["\n\n"],
    "stream": False,
    "stream_options": {"include_usage": True},
    "tools": [_TOOL],
    "tool_choice": "auto",
    "user": "fuzz",
    "seed": 7,
    "response_format": {"type": "text"},
    "logit_bias": {"50256": -100},
    "max_completion_tokens": 16,
}
MESSAGES_BODY: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 16,
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {"w": 1}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "tu_1", "content": "a greeting"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ],
    "temperature": 0.5,
    "top_k": 5,
    "stop_sequences": ["\n\n"],
    "stream": False,
    "tools": [
        {
            "name": "lookup",
            "description": "Look a word up.",
            "input_schema": {"type": "object", "properties": {"w": {"type": "integer"}}},
        }
    ],
    "tool_choice": {"type": "auto"},
    "metadata": {"user_id": "fuzz"},
}
EMBEDDINGS_BODY: dict[str, Any] = {
    "model": "text-embedding-3-small",
    "input": ["hello", "world"],
    "dimensions": 8,
    "encoding_format": "float",
    "user": "fuzz",
}

# (name, path, body): the chat and messages bodies go to a model of each provider kind,
# since a request to the other kind is translated (``gateway/translate``).
TARGETS: list[tuple[str, str, dict[str, Any]]] = [
    ("chat-openai", CHAT, CHAT_BODY),
    ("chat-anthropic", CHAT, {**CHAT_BODY, "model": "claude-haiku-4-5"}),
    ("messages-anthropic", MESSAGES, MESSAGES_BODY),
    ("messages-openai", MESSAGES, {**MESSAGES_BODY, "model": "gpt-4o-mini"}),
    ("embeddings", EMBEDDINGS, EMBEDDINGS_BODY),
]


@dataclass(frozen=True)
class Case:
    """One request. ``expect``: the statuses allowed (``None``: any below 500)."""

    id: str
    method: str
    path: str
    body: bytes | None = None
    headers: tuple[tuple[str, str | bytes], ...] = tuple(JSON.items())
    expect: frozenset[int] | None = None
    # Send the gateway's virtual key (governed configuration) with this case.
    keyed: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def field_paths(node: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every path into ``node`` (objects and lists), parents before children."""
    items: list[tuple[str | int, Any]]
    if isinstance(node, dict):
        items = list(node.items())
    elif isinstance(node, list):
        items = list(enumerate(node))
    else:
        return
    for key, child in items:
        path = (*prefix, key)
        yield path
        yield from field_paths(child, path)


def dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


_SENTINEL = "\u0001fuzz-sentinel\u0001"


def replaced(body: Any, path: tuple[str | int, ...], raw_value: str) -> bytes:
    """``body`` as JSON bytes with the field at ``path`` replaced by ``raw_value``."""
    copy = json.loads(json.dumps(body))
    node = copy
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = _SENTINEL
    text = json.dumps(copy)
    marker = json.dumps(_SENTINEL)
    assert text.count(marker) == 1
    return text.replace(marker, raw_value).encode("utf-8")


def field_cases() -> dict[str, list[Case]]:
    """``{"<target> <field>": [one case per hostile value]}``."""
    groups: dict[str, list[Case]] = {}
    for name, path, body in TARGETS:
        for field_path in field_paths(body):
            label = f"{name} {dotted(field_path)}"
            groups[label] = [
                Case(f"{label}={value}", "POST", path, replaced(body, field_path, raw))
                for value, raw in HOSTILE_VALUES.items()
            ]
    return groups


def _deep_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


DEPTHS = [100, 255, 256, 300, 1000, 1023, 1024, 5000]


def _with(body: dict[str, Any], key: str, raw: str) -> bytes:
    """``body`` with ``key`` set to the raw JSON text ``raw`` (added last)."""
    text = json.dumps({**body, key: _SENTINEL})
    return text.replace(json.dumps(_SENTINEL), raw).encode()


def _message_with(content_raw: str) -> str:
    return '[{"role": "user", "content": ' + content_raw + "}]"


def _tools_with(schema_raw: str, anthropic: bool) -> str:
    if anthropic:
        return '[{"name": "f", "input_schema": {"type": "object", "properties": {"a": ' + (
            schema_raw + "}}}]"
        )
    return (
        '[{"type": "function", "function": {"name": "f", "parameters": '
        '{"type": "object", "properties": {"a": ' + schema_raw + "}}}}]"
    )


def deep_cases() -> list[Case]:
    cases = []
    for name, path, body in TARGETS:
        anthropic_body = path == MESSAGES
        for depth in DEPTHS:
            if name == "embeddings":
                cases.append(
                    Case(
                        f"{name} input=list^{depth}",
                        "POST",
                        path,
                        _with(body, "input", _deep_list(depth)),
                    )
                )
                continue
            cases += [
                Case(
                    f"{name} messages.content=list^{depth}",
                    "POST",
                    path,
                    _with(body, "messages", _message_with(_deep_list(depth))),
                ),
                Case(
                    f"{name} messages.content=object^{depth}",
                    "POST",
                    path,
                    _with(body, "messages", _message_with("[" + _deep_object(depth) + "]")),
                ),
                Case(
                    f"{name} tools.schema=object^{depth}",
                    "POST",
                    path,
                    _with(body, "tools", _tools_with(_deep_object(depth), anthropic_body)),
                ),
            ]
    return cases


_VALID = {CHAT: CHAT_BODY, MESSAGES: MESSAGES_BODY, EMBEDDINGS: EMBEDDINGS_BODY}
_INFERENCE_PATHS = [CHAT, "/chat/completions", MESSAGES, EMBEDDINGS, "/embeddings"]


def body_cases() -> list[Case]:
    """Whole bodies that are wrong: not objects, not JSON, not UTF-8, deep or big."""
    raw_bodies: dict[str, bytes] = {
        "empty": b"",
        "list": b"[]",
        "string": b'"s"',
        "number": b"1",
        "null": b"null",
        "true": b"true",
        "truncated": b'{"model": "gpt-4o-mini", "messages": [',
        "trailing-comma": b'{"model": "gpt-4o-mini",}',
        "single-quotes": b"{'model': 'gpt-4o-mini'}",
        "nan": b'{"model": "gpt-4o-mini", "messages": [], "temperature": NaN}',
        "infinity": b'{"model": "gpt-4o-mini", "max_tokens": Infinity}',
        "invalid-utf8": b'{"model": "gpt-4o-mini\xff\xfe", "messages": []}',
        "invalid-utf8-key": b'{"mo\xc3del": "gpt-4o-mini"}',
        "utf16": json.dumps({"model": "gpt-4o-mini"}).encode("utf-16"),
        "nul-byte-raw": b'{"model": "gpt-4o-mini"}\x00',
        "nul-in-key": b'{"model\\u0000": "gpt-4o-mini", "model": "gpt-4o-mini", "messages": []}',
        "nul-model": b'{"model": "gpt-4o-mini\\u0000", "messages": []}',
        "lone-surrogate-model": b'{"model": "\\udc00gpt-4o-mini", "messages": []}',
        "duplicate-keys": b'{"model": "gpt-4o-mini", "model": 1, "messages": []}',
        "only-whitespace": b" \t\r\n ",
        "deep-list-100000": _deep_list(100_000).encode(),
    }
    cases = []
    for path in _INFERENCE_PATHS:
        for name, raw in raw_bodies.items():
            cases.append(Case(f"{path} {name}", "POST", path, raw))
        valid = json.dumps({**_VALID[_canonical(path)]}).encode()
        cases.append(Case(f"{path} utf8-bom", "POST", path, b"\xef\xbb\xbf" + valid))
        cases.append(
            Case(f"{path} no-content-type", "POST", path, valid, headers=()),
        )
        cases.append(
            Case(
                f"{path} form-content-type",
                "POST",
                path,
                valid,
                headers=(("content-type", "application/x-www-form-urlencoded"),),
            )
        )
    # max_tokens / n far beyond any model, in every type.
    for path in (CHAT, MESSAGES):
        for model in ("gpt-4o-mini", "claude-haiku-4-5"):
            base = {**_VALID[path], "model": model}
            for name, raw in {
                "n=1e9": ("n", "1000000000"),
                "n=2^63": ("n", str(2**63)),
                "max_tokens=2^63": ("max_tokens", str(2**63)),
                "max_tokens=1e308": ("max_tokens", "1e308"),
                "max_tokens=2^1000": ("max_tokens", str(2**1000)),
                "max_tokens=-2^63": ("max_tokens", str(-(2**63))),
                "max_tokens=0.5": ("max_tokens", "0.5"),
                "max_tokens=str": ("max_tokens", '"16"'),
                "max_completion_tokens=2^70": ("max_completion_tokens", str(2**70)),
            }.items():
                cases.append(Case(f"{path} {model} {name}", "POST", path, _with(base, *raw)))
    return cases


def _canonical(path: str) -> str:
    return {"/chat/completions": CHAT, "/embeddings": EMBEDDINGS}.get(path, path)


# 40 MB: above the 32 MB default body limit, so the gateway must answer 413.
LARGE = 40 * 1024 * 1024


def large_body(path: str) -> bytes:
    body = dict(_VALID[_canonical(path)])
    filler = "x" * LARGE
    if path in (EMBEDDINGS, "/embeddings"):
        body["input"] = filler
    else:
        body["messages"] = [{"role": "user", "content": filler}]
    return json.dumps(body).encode()


def large_cases() -> list[Case]:
    cases = []
    for path in (CHAT, MESSAGES, EMBEDDINGS):
        for keyed in (True, False):
            who = "with-key" if keyed else "without-key"
            cases.append(
                Case(f"{path} 40MB {who}", "POST", path, None, expect=frozenset({413}), keyed=keyed)
            )
    cases.append(Case(f"{WEBHOOK} 40MB", "POST", WEBHOOK, None, expect=frozenset({413})))
    return cases


_LONG = "a" * 100_000


def header_cases() -> list[Case]:
    """Every way of sending a key, malformed. Sent without the gateway's own key."""
    values: dict[str, list[tuple[str, str | bytes]]] = {
        "bearer-empty": [("authorization", "Bearer")],
        "bearer-space": [("authorization", "Bearer ")],
        "bearer-spaces": [("authorization", "Bearer      ")],
        "bearer-tab": [("authorization", "Bearer\tth-abc")],
        "bearer-unicode": [("authorization", "Bearer th-\u00e9\u00e8".encode())],
        "bearer-emoji": [("authorization", "Bearer th-\U0001f600".encode())],
        "bearer-latin1": [("authorization", b"Bearer th-\xe9\xff")],
        "bearer-long-th": [("authorization", f"Bearer th-{_LONG}")],
        "bearer-long": [("authorization", f"Bearer {_LONG}")],
        "bearer-th-only": [("authorization", "Bearer th-")],
        "bearer-lowercase": [("authorization", "bearer th-nope")],
        "bearer-uppercase": [("authorization", "BEARER th-nope")],
        "bearer-no-space": [("authorization", "Bearerth-nope")],
        "bearer-two-tokens": [("authorization", "Bearer th-a th-b")],
        "basic": [("authorization", "Basic dXNlcjpwYXNz")],
        "basic-th": [("authorization", "Basic th-nope")],
        "basic-garbage": [("authorization", "Basic !!!")],
        "digest": [("authorization", 'Digest username="u", realm="r"')],
        "only-scheme-nul": [("authorization", b"bearer\x00")],
        "nul-in-token": [("authorization", b"Bearer th-ab\x00cd")],
        "percent-nul": [("authorization", "Bearer th-%00")],
        "duplicate-authorization": [
            ("authorization", "Bearer th-first"),
            ("authorization", "Bearer th-second"),
        ],
        "x-api-key-empty": [("x-api-key", "")],
        "x-api-key-spaces": [("x-api-key", "   ")],
        "x-api-key-unicode": [("x-api-key", "th-\u00e9".encode())],
        "x-api-key-latin1": [("x-api-key", b"th-\xff\xfe")],
        "x-api-key-long": [("x-api-key", f"th-{_LONG}")],
        "x-api-key-th-only": [("x-api-key", "th-")],
        "x-api-key-duplicate": [("x-api-key", "th-a"), ("x-api-key", "th-b")],
        "x-bf-vk-empty": [("x-bf-vk", "")],
        "x-bf-vk-spaces": [("x-bf-vk", "   ")],
        "x-bf-vk-unicode": [("x-bf-vk", "\u202eth-x".encode())],
        "x-bf-vk-latin1": [("x-bf-vk", b"\xff")],
        "x-bf-vk-long": [("x-bf-vk", _LONG)],
        "x-bf-vk-not-th": [("x-bf-vk", "sk-anything")],
        "x-bf-vk-duplicate": [("x-bf-vk", "th-a"), ("x-bf-vk", "th-b")],
        "every-scheme-at-once": [
            ("authorization", "Basic Og=="),
            ("x-api-key", ""),
            ("x-bf-vk", " "),
        ],
    }
    targets = [
        (CHAT, {**CHAT_BODY, "tools": None, "tool_choice": None}),
        (MESSAGES, MESSAGES_BODY),
        (EMBEDDINGS, EMBEDDINGS_BODY),
        (MODELS, None),
        ("/api/usage", None),
        ("/api/governance/customers", None),
    ]
    cases = []
    for path, body in targets:
        for name, headers in values.items():
            method = "GET" if body is None else "POST"
            raw = None if body is None else json.dumps(_clean(body)).encode()
            cases.append(
                Case(
                    f"{method} {path} {name}",
                    method,
                    path,
                    raw,
                    headers=(*JSON.items(), *headers),
                    keyed=False,
                )
            )
    return cases


def _clean(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def url_cases() -> list[Case]:
    """NULs, escapes and unicode in the path and query; methods no route has."""
    get_paths = [
        "/v1/models?x=%00",
        "/v1/models?%00=1",
        "/v1/models?x=%C2%B2",
        "/v1/models?x=%FF%FE",
        "/v1/models?x=%ED%A0%80",
        "/v1/models%00",
        "/v1/models/%00",
        "/v1/models/gpt-4o-mini",
        "/v1/%F0%9F%98%80",
        "/v1/%FF",
        "/v1/%2e%2e/api/usage",
        "/v1/../api/usage",
        "/v1/chat/completions%00",
        "/models?x=%00",
        "/%00",
        "/" + "a" * 8000,
        "/api/governance/customers?limit=%C2%B2",
        "/api/governance/customers/%00",
        "/api/governance/customers/%FF",
        "/api/governance/customers/%ED%A0%80",
        "/api/governance/customers/" + "a" * 5000,
        "/api/governance/teams?customer_id=%00",
        "/api/governance/virtual-keys?team_id=%FF&customer_id=%C2%B2",
        "/api/governance/usage-stats?virtual_key_id=%00",
        "/api/usage?limit=%C2%B2",
        "/api/usage?limit=%D9%A1",
        "/api/usage?limit=%00",
        "/api/usage?since=%C2%B2",
        "/api/usage?until=%00",
        "/api/usage?since=1e400",
        "/api/usage?cursor=%00",
        "/api/usage?cursor=%C2%B2",
        "/api/usage?key_id=%00&model=%FF",
        "/api/alerts?limit=%C2%B2",
        "/api/alerts?limit=%D9%A1",
        "/api/alerts?limit=%00",
        "/api/alerts/%00/deliveries",
        "/api/notification-channels/%00",
        "/api/notification-channels/%FF",
        "/api/%00",
    ]
    cases = [Case(f"GET {p}", "GET", p, None) for p in get_paths]
    for method in ("FOO", "PROPFIND", "TRACE", "OPTIONS", "HEAD", "PATCH", "DELETE", "PUT"):
        for path in (CHAT, MESSAGES, EMBEDDINGS, MODELS, "/api/usage", WEBHOOK):
            cases.append(Case(f"{method} {path}", method, path, b"{}"))
    return cases


# A valid LiteLLM budget event (``alerts/inbound.py``); every field is replaced in turn.
WEBHOOK_EVENT: dict[str, Any] = {
    "spend": 12.5,
    "max_budget": 10,
    "soft_budget": 8,
    "token": "tok-1",
    "customer_id": "cust-1",
    "user_id": "user-1",
    "team_id": "team-1",
    "team_alias": "search",
    "user_email": "a@example.com",
    "key_alias": "k",
    "projected_exceeded_date": "2026-01-01",
    "projected_spend": 20,
    "event": "budget_crossed",
    "event_group": "team",
    "event_message": "Budget crossed",
}


def webhook_field_cases() -> dict[str, list[Case]]:
    """Signed (the test signs each body) events with one hostile field each."""
    groups: dict[str, list[Case]] = {}
    for field_path in field_paths(WEBHOOK_EVENT):
        label = f"webhook {dotted(field_path)}"
        groups[label] = [
            Case(f"{label}={value}", "POST", WEBHOOK, replaced(WEBHOOK_EVENT, field_path, raw))
            for value, raw in HOSTILE_VALUES.items()
        ]
    return groups


def webhook_body_cases() -> list[Case]:
    """Whole bodies (signed) that are wrong."""
    base = json.dumps(WEBHOOK_EVENT)
    bodies = {
        "empty": b"",
        "list": b"[]",
        "null": b"null",
        "invalid-utf8": b'{"spend": 1, "event_message": "\xff"}',
        "utf8-bom": b"\xef\xbb\xbf" + base.encode(),
        "nan-spend": base.replace('"spend": 12.5', '"spend": NaN').encode(),
        "infinity-spend": base.replace('"spend": 12.5', '"spend": Infinity').encode(),
        "neg-infinity-budget": base.replace('"max_budget": 10', '"max_budget": -Infinity').encode(),
        "zero-budget": base.replace('"max_budget": 10', '"max_budget": 0').encode(),
        "tiny-budget": base.replace('"max_budget": 10', '"max_budget": 1e-1000000').encode(),
        "huge-spend": base.replace('"spend": 12.5', '"spend": 1e1000000').encode(),
        "lone-surrogate-extra": base[:-1].encode() + b', "extra": "\\ud800"}',
        "nul-extra": base[:-1].encode() + b', "extra\\u0000": "\\u0000"}',
        "deep-extra-1000": base[:-1].encode() + b', "extra": ' + _deep_list(1000).encode() + b"}",
        "deep-extra-100000": base[:-1].encode()
        + b', "extra": '
        + _deep_list(100_000).encode()
        + b"}",
    }
    return [Case(f"webhook {name}", "POST", WEBHOOK, raw) for name, raw in bodies.items()]


CHANNELS = "/api/notification-channels"
# A channel's create body goes through the corpus too (schemathesis reaches it through
# the OpenAPI document, but never with these values).
CHANNEL_BODY: dict[str, Any] = {
    "name": "ops",
    "type": "email",
    "config": {"host": "127.0.0.1", "port": 25, "from": "a@example.com", "to": ["b@example.com"]},
    "secret": "s3",
    "is_default": False,
}


def channel_field_cases() -> dict[str, list[Case]]:
    groups: dict[str, list[Case]] = {}
    for field_path in field_paths(CHANNEL_BODY):
        label = f"channel {dotted(field_path)}"
        groups[label] = [
            Case(f"{label}={value}", "POST", CHANNELS, replaced(CHANNEL_BODY, field_path, raw))
            for value, raw in HOSTILE_VALUES.items()
        ]
    return groups


ALLOCATE = "/v1/allocate"
ALLOCATE_BODY = {"lab_duration_hours": 1}
# Header values no track id or idempotency key may be (a byte string goes out as is).
HOSTILE_HEADERS: dict[str, str | bytes] = {
    "empty": "",
    "spaces": "   ",
    "long": "t" * 100_000,
    "unicode": "tr\u00e4ck".encode(),
    "latin1": b"tr\xe4ck",
    "nul": b"tr\x00ck",
    "slash-dots": "../../etc/passwd",
    "sql": "t'; DROP TABLE sandboxes; --",
    "percent": "%00%2F",
    "emoji": "\U0001f600".encode(),
}


def broker_cases() -> dict[str, list[Case]]:
    """The broker's one body field with every hostile value, and its two headers with
    every hostile header value (sent with the gateway's broker token)."""
    track = (("x-track-id", "fuzz-track"),)
    groups: dict[str, list[Case]] = {
        "allocate lab_duration_hours": [
            Case(
                f"allocate lab_duration_hours={value}",
                "POST",
                ALLOCATE,
                replaced(ALLOCATE_BODY, ("lab_duration_hours",), raw),
                headers=tuple(JSON.items()) + track,
            )
            for value, raw in HOSTILE_VALUES.items()
        ]
    }
    for header in ("x-track-id", "idempotency-key"):
        groups[f"allocate {header}"] = [
            Case(
                f"allocate {header}={name}",
                "POST",
                ALLOCATE,
                b"{}",
                headers=tuple(JSON.items())
                + ((header, value),)
                + (track if header != "x-track-id" else ()),
            )
            for name, value in HOSTILE_HEADERS.items()
        ]
    return groups


# Signature headers, each sent with a valid event (``None``: the header left out).
WEBHOOK_SIGNATURES: dict[str, str | bytes | None] = {
    "missing": None,
    "empty": "",
    "garbage": "!!!",
    "no-v1": "t=1",
    "no-t": "v1=00",
    # Latin-1 on the wire: "t=²" and "t=¹²³" as Starlette decodes them (str.isdigit is true).
    "t-superscript": b"t=\xb2,v1=00",
    "t-superscripts": b"t=\xb9\xb2\xb3,v1=00",
    "t-huge": "t=" + "9" * 5000 + ",v1=00",
    "t-negative": "t=-1,v1=00",
    "v1-unicode": "t=1,v1=\u00e9".encode(),
    "v1-latin1": b"t=1,v1=\xff",
    "nul": b"t=1\x00,v1=00",
    "many-parts": ",".join(["v1=00"] * 2000),
    "long": "t=1,v1=" + "0" * 100_000,
}
