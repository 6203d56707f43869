"""The request path: resolve the model, send with retries and fallbacks, meter, record.

``Gateway.handle`` takes a parsed body and a ``RequestContext`` (never an HTTP request)
and returns a ``Reply``: whole bytes, or an async iterator of SSE bytes whose ``finally``
records what was streamed, however the stream ends (completed, provider failure, or the
client leaving — which cancels the upstream request).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, Protocol

import aiohttp
import orjson

from tollhouse.config import Settings
from tollhouse.errors import (
    BadRequest,
    ModelNotAllowed,
    TollhouseError,
    UpstreamError,
    UpstreamTimeout,
)
from tollhouse.gateway import sse
from tollhouse.gateway.context import RequestContext
from tollhouse.gateway.estimate import choices, output_token_bound, prompt_token_bound
from tollhouse.gateway.exchanges import EXCHANGES, Exchange, StreamRelay
from tollhouse.gateway.passthrough import (
    check_request,
    dearest_price,
    fallback_models,
    fallback_targets,
)
from tollhouse.gateway.routing import Router, Target
from tollhouse.gateway.streaming import ClosingStream
from tollhouse.gateway.translate import Usage
from tollhouse.gateway.upstreams import Upstream, send_with_retries
from tollhouse.ledger import UsageRecord, UsageRecorder
from tollhouse.ledger.schemas import Status
from tollhouse.money import ZERO, format_usd, to_nanos
from tollhouse.ops.metrics import Metrics
from tollhouse.pricing.catalog import ModelPrice
from tollhouse.web.responses import exact

# Refusals of a known key before any provider call, recorded at no cost (``_refused``):
# payment required (no credit), forbidden (a policy, an allow-list), too many (budgets
# and rate limits).
_REFUSALS = frozenset({402, 403, 429})
_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    media_type: str = "application/json"


@dataclass(slots=True)
class _Outcome:
    """What a request consumed, filled in as it completes."""

    usage: Usage | None = None
    upstream_id: str | None = None
    status: Status = "success"
    http_status: int = 200
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Live:
    """One stream being relayed, until ``Gateway._end_stream`` has ended it.

    The relay generator's ``finally`` ends it; so does ``ClosingStream.aclose`` when the
    response failed before asking for a first chunk (the generator never started, so its
    ``finally`` never runs).
    """

    resp: aiohttp.ClientResponse
    relay: StreamRelay
    endpoint: str
    body: dict[str, Any]
    target: Target
    ctx: RequestContext
    outcome: _Outcome = field(default_factory=_Outcome)
    completed: bool = False  # the provider's stream ended (well or badly)
    recorded: bool = False
    ended: bool = False

    def __post_init__(self) -> None:
        self.outcome.upstream_id = _upstream_id(self.resp)


class Admission(Protocol):
    """What the gateway asks of admission: ``tollhouse.admission.Admission`` (the
    engine), declared here so that the gateway does not import it."""

    def authenticate(self, headers: Mapping[str, str]) -> Any: ...
    def allowed_targets(
        self, key: Any, requested: str, targets: tuple[Target, ...]
    ) -> tuple[Target, ...]: ...
    async def admit(
        self, ctx: RequestContext, key: Any, body: dict[str, Any], targets: tuple[Target, ...]
    ) -> dict[str, str]: ...
    def settle(self, ctx: RequestContext, record: UsageRecord) -> None: ...
    def release(self, ctx: RequestContext) -> None: ...


class Policies(Protocol):
    """The choke point of ``llm.request``: ``tollhouse.policies.PolicyGate``."""

    async def llm_request(
        self,
        key: Any,
        endpoint: str,
        body: Mapping[str, Any],
        model: str,
        targets: tuple[Target, ...],
        request_id: str,
    ) -> tuple[tuple[Target, ...], dict[str, str]]:
        """The targets the policies allow, and the headers naming the decision; raises
        ``PolicyDenied`` (403) when they allow none."""
        ...


class Gateway:
    def __init__(
        self,
        settings: Settings,
        router: Router,
        upstreams: dict[str, Upstream],
        recorder: UsageRecorder,
        metrics: Metrics,
        admission: Admission,
        policies: Policies,
    ) -> None:
        self._settings = settings
        self._router = router
        self._upstreams = upstreams
        self._recorder = recorder
        self._metrics = metrics
        self._admission = admission
        self._policies = policies

    def authenticate(self, headers: Mapping[str, str]) -> Any:
        """The caller's key (``None`` when anonymous use is allowed and none was sent)."""
        return self._admission.authenticate(headers)

    async def handle(
        self,
        endpoint: str,
        body: dict[str, Any],
        ctx: RequestContext,
        key: Any,
    ) -> Reply:
        """Serve one request of ``key`` (from ``authenticate``); raises ``TollhouseError``
        before any byte is sent."""
        in_flight = self._metrics.in_flight
        in_flight.inc()
        try:
            reply = await self._handle(endpoint, body, ctx, key)
        except BaseException as exc:
            in_flight.dec()
            # Nothing was recorded, so nothing was consumed: give the reservation back.
            self._admission.release(ctx)
            refused = isinstance(exc, TollhouseError) and exc.status_code in _REFUSALS
            if refused and key is not None and not ctx.recorded:
                self._refused(endpoint, body, ctx, key, exc)  # type: ignore[arg-type]
            raise
        if reply.stream is None:
            in_flight.dec()
        # A stream stays in flight until its relay ends (see ``_relay``).
        return reply

    async def _handle(
        self,
        endpoint: str,
        body: dict[str, Any],
        ctx: RequestContext,
        key: Any,
    ) -> Reply:
        model = check_request(endpoint, body)
        stream = body.get("stream") is True
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise BadRequest("`stream_options` must be an object", param="stream_options")
        if stream and endpoint == "embeddings":
            raise BadRequest("embeddings cannot be streamed", param="stream")
        targets = self._router.resolve(model)
        if key is not None:
            targets = self._admission.allowed_targets(key, model, targets)
        fallbacks = self._fallbacks(key, body, targets)
        # The one choke point of llm.request: before anything is reserved, sent or streamed.
        candidates, decided = await self._policies.llm_request(
            key, endpoint, body, model, targets + fallbacks, ctx.request_id
        )
        if len(candidates) < len(targets) + len(fallbacks):
            targets = tuple(t for t in targets if t in candidates)
            fallbacks = tuple(t for t in fallbacks if t in candidates)
            if not targets:  # only fallbacks allowed: the first of them leads
                targets, fallbacks = fallbacks[:1], fallbacks[1:]
        try:
            return await self._serve(endpoint, body, ctx, key, stream, targets, fallbacks, decided)
        except TollhouseError as exc:
            exc.headers = {**decided, **exc.headers}  # a refusal names the decision too
            raise

    async def _serve(
        self,
        endpoint: str,
        body: dict[str, Any],
        ctx: RequestContext,
        key: Any,
        stream: bool,
        targets: tuple[Target, ...],
        fallbacks: tuple[Target, ...],
        decided: dict[str, str],
    ) -> Reply:
        limits: dict[str, str] = {}
        if key is not None:
            limits = await self._admission.admit(ctx, key, body, targets + fallbacks)
        resp, target, exchange = await self._open(endpoint, body, targets, ctx, stream)
        if fallbacks:
            # The provider may have served any entry of `models`: charge the dearest.
            prices = [t.price for t in (target, *fallbacks) if t.provider == target.provider]
            target = replace(target, price=dearest_price(prices))
        headers = {
            "x-request-id": ctx.request_id,
            "x-tollhouse-target": target.label,
            **decided,
            **limits,
        }
        if stream:
            relay = exchange.relay(body)
            if key is not None and target.price is not None:
                relay.cost_of = partial(_cost, target.price)
            live = _Live(resp, relay, endpoint, body, target, ctx)
            chunks = ClosingStream(self._relay(live), partial(self._end_stream, live))
            headers.update(_STREAM_HEADERS)
            return Reply(200, headers, stream=chunks, media_type="text/event-stream")
        outcome = _Outcome(upstream_id=_upstream_id(resp))
        raw = b""
        try:
            raw = await resp.read()
            answered = exchange.response(raw)
            outcome.usage = answered.usage
            outcome.upstream_id = outcome.upstream_id or answered.id
            if outcome.usage is None:
                # No usage reported (some self-hosted servers): bound the output by the
                # body's bytes rather than call it free.
                outcome.extra["content_bytes"] = len(raw)
        except (aiohttp.ClientError, TimeoutError, TollhouseError, ValueError) as exc:
            # The provider answered 2xx and may have billed: charge the bounds of what it
            # sent (every generated token is at least one byte of the body).
            outcome.status, outcome.http_status = "error", 502
            outcome.error = f"provider {target.provider} sent an unusable response: {exc!r}"
            outcome.extra["content_bytes"] = len(raw)
            self._record(endpoint, body, target, ctx, outcome, streamed=False)
            raise UpstreamError(outcome.error) from None
        finally:
            resp.release()
        durable = self._record(endpoint, body, target, ctx, outcome, streamed=False)
        if durable is not None:
            await durable  # durability: strict answers only once the record is safe
        data, payload = answered.data, answered.raw
        if key is not None:
            # What this request cost, exactly: in a header and as OpenRouter's usage.cost.
            headers["x-tollhouse-cost"] = format_usd(ctx.cost)
            usage = data.get("usage")
            if isinstance(usage, dict):
                usage["cost"] = exact(ctx.cost)
                payload = None
        return Reply(resp.status, headers, body=orjson.dumps(data) if payload is None else payload)

    @property
    def router(self) -> Router:
        return self._router

    def _refused(
        self, endpoint: str, body: dict[str, Any], ctx: RequestContext, key: Any,
        exc: TollhouseError,
    ) -> None:  # fmt: skip
        """A key's request refused before any provider saw it (a budget, a rate limit, a
        policy, no credit): recorded at no cost, so the log and the overview show it."""
        scopes = {scope.kind: scope.id for scope in key.chain}
        model = body.get("model")
        self._recorder.add(
            UsageRecord(
                id=ctx.request_id,
                created_at=datetime.now(UTC),
                endpoint=endpoint,
                provider="",
                model=model[:200] if isinstance(model, str) else "",
                prompt_tokens=0,
                completion_tokens=0,
                cached_tokens=0,
                cost=ZERO,
                priced=True,
                latency_ms=round(ctx.elapsed_ms(), 3),
                status="refused",
                http_status=exc.status_code,
                streamed=body.get("stream") is True,
                key_id=scopes.get("key"),
                team_id=scopes.get("team"),
                customer_id=scopes.get("customer"),
                error=f"{exc.code}: {exc.message}"[:2000],
                session_id=ctx.agent.session_id if ctx.agent is not None else None,
                persona_id=ctx.agent.persona_id if ctx.agent is not None else None,
            )
        )
        ctx.recorded = True

    def _fallbacks(
        self, key: Any, body: dict[str, Any], targets: tuple[Target, ...]
    ) -> tuple[Target, ...]:
        """OpenRouter's ``models`` entries as targets: each priced, and allowed for ``key``
        as if it had been asked for by name (the provider may route to any of them)."""
        models = fallback_models(body)
        if not models:
            return ()
        providers = tuple(t.provider for t in targets)
        pairs = fallback_targets(models, providers, self._router.target)
        if key is not None:
            for param, target in pairs:
                try:
                    # By label: a bare entry must not match a route of the same name.
                    self._admission.allowed_targets(key, target.label, (target,))
                except ModelNotAllowed as exc:
                    raise ModelNotAllowed(f"`{param}`: {exc.message}", param=param) from None
        return tuple(target for _, target in pairs)

    def models(self, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """``(id, owner)`` of every model the caller's key may name."""
        key = self._admission.authenticate(headers)
        listed = self._router.listed_models()
        if key is None:
            return listed
        allowed = []
        for model, owner in listed:
            try:
                targets = self._router.resolve(model)
                if self._admission.allowed_targets(key, model, targets):
                    allowed.append((model, owner))
            except TollhouseError:
                continue
        return allowed

    async def _open(
        self,
        endpoint: str,
        body: dict[str, Any],
        targets: tuple[Target, ...],
        ctx: RequestContext,
        stream: bool,
    ) -> tuple[aiohttp.ClientResponse, Target, Exchange]:
        """The first target that answers 2xx, walking the fallback chain."""
        last: UpstreamError | None = None
        for target in targets:
            upstream = self._upstreams[target.provider]
            exchange = EXCHANGES.get((endpoint, upstream.kind))
            if exchange is None:
                last = UpstreamError(
                    f"provider {target.provider} ({upstream.kind}) does not serve {endpoint}",
                    upstream_status=400,
                )
                continue
            max_tokens = output_token_bound(
                body, self._model_cap(target), self._settings.default_max_output_tokens
            )
            payload = exchange.request(body, target.model, max_tokens)
            failed = partial(self._upstream_failed, target.provider)

            try:
                resp = await send_with_retries(
                    upstream,
                    exchange.path,
                    payload,
                    stream=stream,
                    settings=self._settings,
                    on_failure=failed,
                )
            except UpstreamError as exc:
                last = exc
                if isinstance(exc, UpstreamTimeout) or _client_fault(exc):
                    break
                continue
            return resp, target, exchange
        assert last is not None
        outcome = _Outcome(status="error", http_status=last.status_code, error=last.message)
        self._record(endpoint, body, targets[-1], ctx, outcome, streamed=stream)
        raise last

    async def _relay(self, live: _Live) -> AsyncGenerator[bytes, None]:
        """The client's bytes of one stream; ``_end_stream`` settles it (see ``_Live``)."""
        resp, relay, outcome = live.resp, live.relay, live.outcome
        decoder = sse.SSEDecoder()
        try:
            async for chunk in resp.content.iter_any():
                for event in decoder.feed(chunk):
                    out = relay.feed(event)
                    if out:
                        yield out
            for event in decoder.close():
                out = relay.feed(event)
                if out:
                    yield out
            tail = relay.finish()
            if tail:
                yield tail
            live.completed = True
            if self._settings.durability == "strict":
                # The response's end (not its last event) waits for the record.
                durable = self._finish_stream(live)
                if durable is not None:
                    await durable
        except asyncio.CancelledError:
            outcome.status, outcome.http_status = "cancelled", 499
            outcome.error = "client disconnected"
            raise
        except (aiohttp.ClientError, TimeoutError, TollhouseError, ValueError) as exc:
            error = (
                exc
                if isinstance(exc, TollhouseError)
                else UpstreamError(f"provider {live.target.provider} stream broke: {exc!r}")
            )
            outcome.status, outcome.http_status, outcome.error = "error", 502, error.message
            live.completed = True
            yield relay.error(error)
        finally:
            self._end_stream(live)

    def _end_stream(self, live: _Live) -> None:
        """Close the upstream, record and settle, and leave the in-flight gauge: once,
        whether the relay finished, failed, was closed mid-way or never started."""
        if live.ended:
            return
        live.ended = True
        # Closing (not releasing) drops the connection, which cancels the upstream
        # generation when the client has gone.
        live.resp.close()
        try:
            if not live.recorded:
                outcome = live.outcome
                if outcome.status == "success" and not live.completed:
                    # Closed before its end (or before its first byte): the client left.
                    outcome.status, outcome.http_status = "cancelled", 499
                    outcome.error = "client disconnected"
                self._finish_stream(live)
        finally:
            self._metrics.in_flight.dec()

    def _finish_stream(self, live: _Live) -> asyncio.Future[None] | None:
        live.recorded = True
        outcome, relay = live.outcome, live.relay
        outcome.usage = relay.usage
        if outcome.usage is None or outcome.usage.completion_tokens == 0:
            outcome.extra["content_bytes"] = relay.content_bytes
        return self._record(live.endpoint, live.body, live.target, live.ctx, outcome, streamed=True)

    def _upstream_failed(self, provider: str, kind: str) -> None:
        self._metrics.upstream_errors.labels(provider, kind).inc()

    def _model_cap(self, target: Target) -> int | None:
        return target.price.max_output_tokens if target.price else None

    def _record(
        self,
        endpoint: str,
        body: dict[str, Any],
        target: Target,
        ctx: RequestContext,
        outcome: _Outcome,
        *,
        streamed: bool,
    ) -> asyncio.Future[None] | None:
        """Settle and record; with ``durability: strict``, the future of the record
        being written (or spooled) for the caller to await."""
        usage = outcome.usage
        if usage is None or (usage.completion_tokens == 0 and "content_bytes" in outcome.extra):
            cap = output_token_bound(
                body, self._model_cap(target), self._settings.default_max_output_tokens
            )
            # The same bound admission reserved (``estimate.worst_case``).
            usage = _bounded_usage(body, outcome, usage, cap * choices(body))
        price = target.price
        cost = _cost(price, usage) if price is not None else ZERO
        latency = ctx.elapsed_ms()
        ctx.cost = cost
        record = UsageRecord(
            id=ctx.request_id,
            created_at=datetime.now(UTC),
            endpoint=endpoint,
            provider=target.provider,
            model=target.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cost=cost,
            priced=price is not None,
            latency_ms=round(latency, 3),
            status=outcome.status,
            http_status=outcome.http_status,
            streamed=streamed,
            key_id=ctx.key_id,
            team_id=ctx.team_id,
            customer_id=ctx.customer_id,
            upstream_request_id=outcome.upstream_id,
            error=outcome.error,
            credit_account_id=ctx.credit_account_id,
            session_id=ctx.agent.session_id if ctx.agent is not None else None,
            persona_id=ctx.agent.persona_id if ctx.agent is not None else None,
        )
        # Settle with the very record the ledger stores: counters and ledger agree.
        self._admission.settle(ctx, record)
        ctx.recorded = True
        durable = None
        if self._settings.durability == "strict":
            durable = self._recorder.add_durable(record)
        else:
            self._recorder.add(record)
        self._observe(endpoint, target, outcome, usage, cost, latency)
        return durable

    def _observe(
        self,
        endpoint: str,
        target: Target,
        outcome: _Outcome,
        usage: Usage,
        cost: Decimal,
        latency_ms: float,
    ) -> None:
        self._metrics.observe_request(
            endpoint,
            target.provider,
            target.model,
            outcome.http_status,
            latency_ms / 1000,
            (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens),
            to_nanos(cost),
            target.price is not None,
        )


def _bounded_usage(
    body: dict[str, Any], outcome: _Outcome, seen: Usage | None, output_cap: int
) -> Usage:
    """Usage when the provider sent none: the bounds of what was sent (docs/governance.md)."""
    if outcome.status == "error" and "content_bytes" not in outcome.extra:
        return Usage(prompt_tokens=0, completion_tokens=0)
    prompt = seen.prompt_tokens if seen and seen.prompt_tokens else prompt_token_bound(body)
    # Bytes bound tokens from above, and so does the request's own output cap: the
    # provider cannot have produced more than either, and the reservation assumed no more.
    completion = min(int(outcome.extra.get("content_bytes", 0)), output_cap)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=seen.cached_tokens if seen else 0,
    )


def _client_fault(exc: UpstreamError) -> bool:
    status = exc.upstream_status
    # 401/403 mean this provider's credentials failed: another target may still serve.
    return status is not None and 400 <= status < 500 and status not in (401, 403, 408, 409, 429)


def _upstream_id(resp: aiohttp.ClientResponse) -> str | None:
    return resp.headers.get("x-request-id") or resp.headers.get("request-id")


def _cost(price: ModelPrice, usage: Usage) -> Decimal:
    """What ``usage`` costs at ``price``: the records' figure, and a stream's usage.cost."""
    return price.cost(
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        usage.cache_creation_tokens,
    )
