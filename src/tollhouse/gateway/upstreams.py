"""Pooled HTTP clients for providers, with retries and backoff.

One ``aiohttp`` session per provider keeps a pool of keep-alive connections
(``upstream_pool_size``). ``send`` retries a target on connection errors, 429 and 5xx
with exponential backoff and full jitter, honouring a short ``Retry-After``; it never
retries once a response has started streaming to the client, because it returns before
that happens and the caller owns the stream from then on.

Redirects are never followed: providers do not redirect API calls, and aiohttp would
carry custom credential headers (``x-api-key``, ``api-key``) to the new host. A 3xx is
an upstream error (502) naming where the provider pointed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import orjson

from tollhouse.backoff import Backoff
from tollhouse.config import ProviderConfig, Settings
from tollhouse.errors import UpstreamError, UpstreamTimeout

ANTHROPIC_VERSION = "2023-06-01"
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})


class Upstream:
    """One provider: base URL, credentials and its connection pool."""

    def __init__(self, name: str, cfg: ProviderConfig, settings: Settings) -> None:
        self.name = name
        self.kind = cfg.resolved_type
        self.base_url = cfg.resolved_base_url
        self._settings = settings
        headers = {"content-type": "application/json", **cfg.headers}
        key = cfg.api_key.get_secret_value() if cfg.api_key else None
        if self.kind == "anthropic":
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["authorization"] = f"Bearer {key}"
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._plain_timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout_s, sock_connect=settings.connect_timeout_s
        )
        # A stream may legitimately last long; what must not happen is a long silence.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.request_timeout_s,
        )

    def url(self, path: str) -> str:
        return self.base_url + path

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._settings.upstream_pool_size, ttl_dns_cache=300, keepalive_timeout=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, skip_auto_headers=("User-Agent",)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, path: str, payload: bytes, *, stream: bool) -> aiohttp.ClientResponse:
        """One attempt. Returns any response; raises ``UpstreamError`` on transport failure."""
        if self._session is None:
            raise UpstreamError(f"provider {self.name} is not started")
        timeout = self._stream_timeout if stream else self._plain_timeout
        try:
            return await self._session.post(
                self.url(path), data=payload, timeout=timeout, allow_redirects=False
            )
        except TimeoutError:
            raise UpstreamTimeout(f"provider {self.name} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"provider {self.name} unreachable: {exc}") from None


def backoff_delay(attempt: int, settings: Settings, retry_after: str | None = None) -> float:
    """Full-jitter exponential backoff; a short ``Retry-After`` from the provider wins."""
    cap = settings.retry_backoff_max_s
    if retry_after:
        try:
            wanted = float(retry_after)
        except ValueError:
            wanted = -1.0
        if 0 <= wanted <= cap:
            return wanted
    return Backoff(settings.retry_backoff_s, cap, jitter=True).delay(attempt)


async def error_from(resp: aiohttp.ClientResponse, provider: str) -> UpstreamError:
    """Read a failed response and turn it into an ``UpstreamError`` with its message."""
    try:
        raw = await resp.read()
    finally:
        resp.release()
    message = raw.decode("utf-8", "replace")[:500] or resp.reason or "no body"
    try:
        parsed = orjson.loads(raw)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
        elif isinstance(error, str):
            message = error
    except orjson.JSONDecodeError:
        pass
    headers = {}
    if resp.status == 429 and "retry-after" in resp.headers:
        headers["retry-after"] = resp.headers["retry-after"]
    return UpstreamError(
        f"provider {provider} answered {resp.status}: {message}",
        upstream_status=resp.status,
        headers=headers,
    )


def redirected(resp: aiohttp.ClientResponse, provider: str) -> UpstreamError:
    """A provider's 3xx as a 502: not followed, and not retried (it would say the same)."""
    location = resp.headers.get("location", "")[:200] or "nowhere"
    resp.release()
    return UpstreamError(
        f"provider {provider} answered {resp.status}, a redirect to {location}; Tollhouse "
        "does not follow provider redirects (they would carry its credentials to another "
        "host): check the provider's base_url"
    )


Sleep = Callable[[float], Awaitable[None]]


async def send_with_retries(
    upstream: Upstream,
    path: str,
    payload: bytes,
    *,
    stream: bool,
    settings: Settings,
    on_failure: Callable[[str], None],
    sleep: Sleep = asyncio.sleep,
) -> aiohttp.ClientResponse:
    """A 2xx response from ``upstream``, retrying what is worth retrying.

    Raises the last ``UpstreamError`` (``UpstreamTimeout`` on a timeout, which is not
    retried); its ``upstream_status`` tells the caller whether a fallback target may
    still help: a provider's 4xx other than 401/403/408/409/429 is the request's own
    fault (``gateway.service._client_fault``).
    """
    attempt = 0
    while True:
        try:
            resp = await upstream.post(path, payload, stream=stream)
        except UpstreamTimeout:
            on_failure("timeout")
            raise
        except UpstreamError:
            on_failure("connect")
            if attempt >= settings.max_retries:
                raise
        else:
            if resp.status < 300:
                return resp
            if resp.status < 400:
                on_failure(str(resp.status))
                raise redirected(resp, upstream.name)
            error = await error_from(resp, upstream.name)
            on_failure(str(resp.status))
            if resp.status not in RETRYABLE or attempt >= settings.max_retries:
                raise error
            await sleep(backoff_delay(attempt, settings, resp.headers.get("retry-after")))
            attempt += 1
            continue
        await sleep(backoff_delay(attempt, settings))
        attempt += 1
