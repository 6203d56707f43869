"""Every error Tollhouse raises on purpose, and how each one reads on the wire.

::

    TollhouseError                     500 api_error
    ├── ConfigError                    (stops start-up or a command; never sent)
    ├── BadRequest                     400 invalid_request_error
    │   ├── InvalidJSON                400 invalid_json
    │   ├── ValidationFailed           400 invalid_value
    │   └── ModelNotPriced             400 model_not_priced
    ├── AuthenticationFailed           401 authentication_error
    │   └── SignatureInvalid           401 invalid_signature
    ├── PaymentRequired                402 insufficient_quota
    │   ├── BudgetExceeded             402 budget_exceeded
    │   └── InsufficientCredits        402 insufficient_credits
    ├── PermissionDenied               403 permission_error
    │   ├── KeyInactive                403 key_inactive
    │   ├── ModelNotAllowed            403 model_not_allowed
    │   ├── PolicyDenied               403 policy_denied
    │   └── NotOwner                   403 not_owner
    ├── NotFound                       404 not_found_error
    │   └── ModelNotFound              404 model_not_found
    ├── MethodNotAllowed               405 method_not_allowed
    ├── RequestTimeout                 408 request_timeout
    ├── Conflict                       409 conflict
    ├── SecretUnreadable               409 secret_unreadable
    ├── PayloadTooLarge                413 payload_too_large
    ├── UnsupportedMediaType           415 unsupported_media_type
    ├── MisdirectedRequest             421 misdirected_request
    ├── UnprocessableEvent             422 invalid_event
    ├── RateLimited                    429 rate_limit_error
    │   ├── ParallelLimited            429 parallel_limit_exceeded
    │   ├── AgentBudgetExceeded        429 agent_budget_exceeded
    │   └── TooManyFailures            429 too_many_failures
    ├── UpstreamError                  502 api_error (or the upstream's own 4xx/429)
    │   └── UpstreamTimeout            504 timeout
    └── ServiceUnavailable             503 service_unavailable
        ├── StoreUnavailable           503 store_unavailable
        └── PoolExhausted              503 pool_exhausted

Each class carries its HTTP status and OpenAI ``type``/``code``; ``openai_body``,
``anthropic_body`` and ``admin_body`` are the only places the three wire shapes are
built, and ``tests/test_error_shape.py`` walks every class through them.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Anthropic's error types by HTTP status; its SDK picks exception classes by status too.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    421: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class TollhouseError(Exception):
    """Base class: an error with a status and a message a client can act on."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    @property
    def status_code(self) -> int:
        return self.status


class ConfigError(TollhouseError):
    """Settings that cannot work; raised while settings are read and the app is built,
    with the fix in the message, so it stops start-up or a CLI command. Nothing raises it
    while serving: a stored secret the configured keys cannot read is ``SecretUnreadable``.
    """

    code = "invalid_config"


class BadRequest(TollhouseError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class ValidationFailed(BadRequest):
    code = "invalid_value"


class ModelNotPriced(BadRequest):
    """No price is known for the model and the operator has not allowed unpriced use."""

    code = "model_not_priced"


class AuthenticationFailed(TollhouseError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class SignatureInvalid(AuthenticationFailed):
    """A signed webhook whose signature is missing, malformed, stale or wrong."""

    code = "invalid_signature"


class PaymentRequired(TollhouseError):
    status = 402
    type = "insufficient_quota"
    code = "payment_required"


class BudgetExceeded(PaymentRequired):
    """A budget of the key, its team or its customer cannot cover the worst case."""

    code = "budget_exceeded"


class InsufficientCredits(PaymentRequired):
    """The prepaid account paying for the key cannot cover the worst case."""

    code = "insufficient_credits"


class PermissionDenied(TollhouseError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class KeyInactive(PermissionDenied):
    """The key is switched off or past its expiry."""

    code = "key_inactive"


class ModelNotAllowed(PermissionDenied):
    """The key may not use this model or provider."""

    code = "model_not_allowed"


class PolicyDenied(PermissionDenied):
    """A policy denied the action (or none of the policies that apply allowed it)."""

    code = "policy_denied"


class NotOwner(PermissionDenied):
    """A sandbox operation by a track that does not hold its lease."""

    code = "not_owner"


class NotFound(TollhouseError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    type = "invalid_request_error"
    code = "model_not_found"


class MethodNotAllowed(TollhouseError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(TollhouseError):
    """The client did not send the whole body within ``body_timeout_s``."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(TollhouseError):
    """The body is larger than ``max_request_body_mb``; refused before it is read."""

    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UnsupportedMediaType(TollhouseError):
    """A write to the keyless (loopback) admin API without ``Content-Type: application/json``."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class Conflict(TollhouseError):
    """A write that contradicts what is stored: a second credit account for one owner,
    an ``Idempotency-Key`` reused for a different request."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class SecretUnreadable(TollhouseError):
    """A stored secret (a channel's secret or URL) that ``TOLLHOUSE_SECRET_KEY`` cannot
    decrypt: the key that sealed it was removed, or no key is set. A conflict between
    the resource and the server's keys, which the operator resolves by storing the
    secret again (``PUT``) or by restoring the key; never a 5xx."""

    status = 409
    type = "invalid_request_error"
    code = "secret_unreadable"


class MisdirectedRequest(TollhouseError):
    """The keyless admin API asked for under a ``Host`` that is not loopback (DNS rebinding)."""

    status = 421
    type = "invalid_request_error"
    code = "misdirected_request"


class UnprocessableEvent(TollhouseError):
    """Well-formed JSON that is not a valid event (the message names the field)."""

    status = 422
    type = "invalid_request_error"
    code = "invalid_event"


class RateLimited(TollhouseError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ParallelLimited(RateLimited):
    code = "parallel_limit_exceeded"


class AgentBudgetExceeded(RateLimited):
    """An agent session's tenant or persona has used its tokens for the window."""

    code = "agent_budget_exceeded"


class TooManyFailures(RateLimited):
    """Too many failed admin-key or signature checks from one address: wait and retry."""

    code = "too_many_failures"


class UpstreamError(TollhouseError):
    """The provider failed after retries and fallbacks; ``upstream_status`` says how.

    A provider's own 4xx is the request's problem, so it is passed on with its status —
    except 401/403, which say Tollhouse's provider credentials are wrong (502); 5xx and
    connection failures become 502.
    """

    status = 502
    type = "api_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, headers=headers)
        self.upstream_status = upstream_status

    @property
    def status_code(self) -> int:
        status = self.upstream_status
        # 401/403 from a provider mean *our* provider credentials are wrong: telling the
        # client its own key failed would send it looking in the wrong place.
        if status is not None and 400 <= status < 500 and status not in (401, 403):
            return status
        return self.status


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class ServiceUnavailable(TollhouseError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class StoreUnavailable(ServiceUnavailable):
    code = "store_unavailable"


class PoolExhausted(ServiceUnavailable):
    """No sandbox is available to lease (with ``Retry-After``)."""

    code = "pool_exhausted"


def openai_body(exc: TollhouseError) -> dict[str, Any]:
    """OpenAI's error envelope, which the openai SDK turns into the right exception."""
    return {
        "error": {
            "message": exc.message,
            "type": _openai_type(exc),
            "param": exc.param,
            "code": exc.code,
        }
    }


def anthropic_body(exc: TollhouseError) -> dict[str, Any]:
    """Anthropic's error envelope, for ``/v1/messages``."""
    kind = _ANTHROPIC_TYPES.get(exc.status_code, "api_error")
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def admin_body(exc: TollhouseError) -> dict[str, Any]:
    """The admin API's envelope: a message and a machine code (docs/errors.md)."""
    return {"error": exc.message, "code": exc.code}


def _openai_type(exc: TollhouseError) -> str:
    if isinstance(exc, UpstreamError) and exc.status_code == 429:
        return RateLimited.type
    if isinstance(exc, UpstreamError) and exc.status_code < 500:
        return BadRequest.type
    return exc.type
