"""The OPA engine: a condition is a data path in an external OPA (``tollhouse/authz/
allow``), asked over OPA's REST API for each decision: ``POST <url>/v1/data/<path>``
with ``{"input": <document>}``.

OPA's answer is read as its REST contract defines it: ``200 {"result": true|false}`` is
the decision; ``200 {}`` (no ``result``: the rule or package does not exist, or has no
value for this input) is *undefined*, ``None``, which the choke point denies. Anything
else — a result that is not a boolean (null included), another status, a body that is
not JSON, a connection refused, the timeout (``policy_opa_timeout_ms``) — raises
``EvaluationFailed``, and the policy's ``fail_mode`` decides.

On write only the path is checked (segments of letters, digits and ``_``; slashes
around it are dropped): the policy lives in OPA, which may not even be reachable then,
and it can change without Tollhouse knowing. There is no rule to name — the path is
the rule.

Redirects are never followed (as with providers, ``gateway/upstreams.py``): OPA does
not redirect its API, and a redirect would send the input document — who is asking,
for what — wherever it points. The body read is capped: a decision is a boolean.

The HTTP session belongs to whoever starts the engine (as a provider's belongs to its
``Upstream``): the engine is given it, or a callable returning it when the session is
made later, on the running loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from tollhouse.config import Settings
from tollhouse.policies.engines import Document, EngineName, EvaluationFailed, PolicyInvalid

MAX_PATH = 512  # characters
MAX_BODY = 64 * 1024  # bytes of an answer: {"result": true} and a decision id
_SEGMENT = re.compile(r"[A-Za-z0-9_]+")

SessionSource = aiohttp.ClientSession | Callable[[], aiohttp.ClientSession]


class OpaCondition:
    is_async = True

    def __init__(self, source: str, path: str, engine: OpaEngine) -> None:
        self.source = source
        self.path = path
        self.url = f"{engine.base_url}/v1/data/{path}"
        self._engine = engine

    def evaluate(self, prepared: Any) -> bool | None:
        raise EvaluationFailed("the opa engine is external: its conditions are awaited")

    async def evaluate_async(self, prepared: Any) -> bool | None:
        engine = self._engine
        try:
            async with asyncio.timeout(engine.timeout_s):
                status, location, body = await engine.post(self.url, prepared)
        except TimeoutError:
            raise EvaluationFailed(
                f"OPA did not answer {self.path} within {engine.timeout_s * 1000:g} ms"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise EvaluationFailed(f"OPA unreachable ({self.path}): {exc}"[:300]) from None
        if 300 <= status < 400:
            raise EvaluationFailed(
                f"OPA answered {status}, a redirect to {location[:200] or 'nowhere'}; "
                "redirects are not followed: check policy_opa_url"
            )
        if status != 200:
            raise EvaluationFailed(f"OPA answered {status} for {self.path}: {_message(body)}")
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise EvaluationFailed(f"OPA's answer for {self.path} is not JSON") from None
        if not isinstance(answer, dict):
            raise EvaluationFailed(f"OPA's answer for {self.path} is not a JSON object")
        if "result" not in answer:
            return None  # undefined: OPA's {} for a path without a value
        result = answer["result"]
        if isinstance(result, bool):
            return result
        shown = orjson.dumps(result)[:64].decode("utf-8", "replace")
        raise EvaluationFailed(f"OPA answered {shown} for {self.path}, not a boolean")

    def __repr__(self) -> str:
        return f"OpaCondition({self.path!r})"


class OpaEngine:
    name: EngineName = "opa"

    def __init__(self, base_url: str, timeout_s: float, session: SessionSource) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = session

    @classmethod
    def from_settings(cls, settings: Settings, session: SessionSource) -> OpaEngine | None:
        """The engine ``policy_opa_url`` configures, or ``None`` when it is unset."""
        if settings.policy_opa_url is None:
            return None
        return cls(settings.policy_opa_url, settings.policy_opa_timeout_ms / 1000, session)

    def compile(
        self, source: str, rule: str | None = None, action: str = "llm.request"
    ) -> OpaCondition:
        if rule is not None:
            raise PolicyInvalid(
                "an OPA condition is a data path (tollhouse/authz/allow): it has no rule to name",
                param="rule",
            )
        if len(source) > MAX_PATH:
            raise PolicyInvalid(f"an OPA data path is at most {MAX_PATH} characters")
        path = source.strip().strip("/")
        if not path:
            raise PolicyInvalid("the condition is empty: an OPA data path, tollhouse/authz/allow")
        bad = next((part for part in path.split("/") if not _SEGMENT.fullmatch(part)), None)
        if bad is not None:
            raise PolicyInvalid(
                f"OPA data path {path[:64]!r}: segment {bad[:32]!r} is not letters, digits "
                "and _ (a path like tollhouse/authz/allow)"
            )
        return OpaCondition(source, path, self)

    def prepare(self, doc: Document) -> Any:
        return orjson.dumps({"input": doc})

    async def post(self, url: str, body: bytes) -> tuple[int, str, bytes]:
        """One POST: the status, a redirect's location, and the body (read up to the cap)."""
        source = self._session
        session = source if isinstance(source, aiohttp.ClientSession) else source()
        headers = {"content-type": "application/json", "accept": "application/json"}
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
            if resp.content_length is not None and resp.content_length > MAX_BODY:
                raise EvaluationFailed(f"OPA's answer is {resp.content_length} bytes, too big")
            read = await resp.content.read(MAX_BODY + 1)
            while len(read) <= MAX_BODY and not resp.content.at_eof():
                more = await resp.content.read(MAX_BODY + 1 - len(read))
                if not more:
                    break
                read += more
            if len(read) > MAX_BODY:
                raise EvaluationFailed(f"OPA's answer is over {MAX_BODY} bytes, too big")
            return resp.status, resp.headers.get("location", ""), read


def _message(body: bytes) -> str:
    """OPA's error message (``{"code", "message"}``), or the start of the body."""
    try:
        error = orjson.loads(body)
    except orjson.JSONDecodeError:
        error = None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:200]
    return body[:200].decode("utf-8", "replace") or "no body"
