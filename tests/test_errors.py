"""Every error class through the three wire shapes, with its documented status."""

from __future__ import annotations

import re

import pytest

import tollhouse.errors as errors_module
from tollhouse.errors import (
    TollhouseError,
    UpstreamError,
    UpstreamTimeout,
    admin_body,
    anthropic_body,
    openai_body,
)


def all_error_classes() -> list[type[TollhouseError]]:
    found: list[type[TollhouseError]] = [TollhouseError]
    pending = list(TollhouseError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    # Only the shipped hierarchy; tests elsewhere may define their own subclasses.
    return sorted(
        (c for c in found if c.__module__ == errors_module.__name__), key=lambda c: c.__name__
    )


ERROR_CLASSES = all_error_classes()

# (status, OpenAI type, code): the table of errors.py's docstring and docs/errors.md.
EXPECTED = {
    "TollhouseError": (500, "api_error", "internal_error"),
    "ConfigError": (500, "api_error", "invalid_config"),
    "BadRequest": (400, "invalid_request_error", "invalid_request"),
    "InvalidJSON": (400, "invalid_request_error", "invalid_json"),
    "ValidationFailed": (400, "invalid_request_error", "invalid_value"),
    "ModelNotPriced": (400, "invalid_request_error", "model_not_priced"),
    "AuthenticationFailed": (401, "authentication_error", "invalid_api_key"),
    "SignatureInvalid": (401, "authentication_error", "invalid_signature"),
    "UnprocessableEvent": (422, "invalid_request_error", "invalid_event"),
    "PermissionDenied": (403, "permission_error", "permission_denied"),
    "NotFound": (404, "not_found_error", "not_found"),
    "ModelNotFound": (404, "invalid_request_error", "model_not_found"),
    "MethodNotAllowed": (405, "invalid_request_error", "method_not_allowed"),
    "RequestTimeout": (408, "invalid_request_error", "request_timeout"),
    "PayloadTooLarge": (413, "invalid_request_error", "payload_too_large"),
    "UnsupportedMediaType": (415, "invalid_request_error", "unsupported_media_type"),
    "MisdirectedRequest": (421, "invalid_request_error", "misdirected_request"),
    "SecretUnreadable": (409, "invalid_request_error", "secret_unreadable"),
    "Conflict": (409, "invalid_request_error", "conflict"),
    "TooManyFailures": (429, "rate_limit_error", "too_many_failures"),
    "RateLimited": (429, "rate_limit_error", "rate_limit_exceeded"),
    "ParallelLimited": (429, "rate_limit_error", "parallel_limit_exceeded"),
    "AgentBudgetExceeded": (429, "rate_limit_error", "agent_budget_exceeded"),
    "PaymentRequired": (402, "insufficient_quota", "payment_required"),
    "BudgetExceeded": (402, "insufficient_quota", "budget_exceeded"),
    "InsufficientCredits": (402, "insufficient_quota", "insufficient_credits"),
    "KeyInactive": (403, "permission_error", "key_inactive"),
    "ModelNotAllowed": (403, "permission_error", "model_not_allowed"),
    "PolicyDenied": (403, "permission_error", "policy_denied"),
    "NotOwner": (403, "permission_error", "not_owner"),
    "UpstreamError": (502, "api_error", "upstream_error"),
    "UpstreamTimeout": (504, "api_error", "upstream_timeout"),
    "ServiceUnavailable": (503, "api_error", "service_unavailable"),
    "StoreUnavailable": (503, "api_error", "store_unavailable"),
    "PoolExhausted": (503, "api_error", "pool_exhausted"),
}

ANTHROPIC_TYPE = {
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
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


def _docstring_tree() -> dict[str, int | None]:
    """Class name -> status as drawn in the errors.py module docstring."""
    tree: dict[str, int | None] = {}
    for line in (errors_module.__doc__ or "").splitlines():
        match = re.match(r"^\s+[│ ]*(?:[├└]── )?([A-Z][A-Za-z]+)\s+(\d{3})?", line)
        if match and isinstance(getattr(errors_module, match.group(1), None), type):
            status = match.group(2)
            tree[match.group(1)] = int(status) if status else None
    return tree


def test_every_class_is_known_to_this_test():
    # A new error class must be added to EXPECTED (and the docs) on purpose.
    assert {cls.__name__ for cls in ERROR_CLASSES} == set(EXPECTED)


def test_docstring_tree_lists_every_class_with_its_status():
    tree = _docstring_tree()
    assert set(tree) == set(EXPECTED)
    for cls in ERROR_CLASSES:
        documented = tree[cls.__name__]
        if documented is not None:
            assert cls.status == documented, cls.__name__


def test_hierarchy_matches_the_docstring():
    assert issubclass(errors_module.InvalidJSON, errors_module.BadRequest)
    assert issubclass(errors_module.ValidationFailed, errors_module.BadRequest)
    assert issubclass(errors_module.ModelNotPriced, errors_module.BadRequest)
    assert issubclass(errors_module.ModelNotFound, errors_module.NotFound)
    assert issubclass(errors_module.UpstreamTimeout, errors_module.UpstreamError)
    assert issubclass(errors_module.StoreUnavailable, errors_module.ServiceUnavailable)
    for cls in ERROR_CLASSES:
        assert issubclass(cls, TollhouseError)


def _make(cls: type[TollhouseError]) -> TollhouseError:
    if issubclass(cls, UpstreamError):
        return cls("the provider broke")
    return cls("something is wrong", param="model")


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_openai_body(cls):
    exc = _make(cls)
    status, kind, code = EXPECTED[cls.__name__]
    assert exc.status_code == status
    body = openai_body(exc)
    assert list(body) == ["error"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] == exc.message
    assert body["error"]["type"] == kind
    assert body["error"]["code"] == code
    assert body["error"]["param"] == exc.param
    for value in body["error"].values():
        assert value is None or isinstance(value, str)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_anthropic_body(cls):
    exc = _make(cls)
    body = anthropic_body(exc)
    assert body == {
        "type": "error",
        "error": {"type": ANTHROPIC_TYPE[exc.status_code], "message": exc.message},
    }


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_admin_body(cls):
    exc = _make(cls)
    body = admin_body(exc)
    assert body == {"error": exc.message, "code": EXPECTED[cls.__name__][2]}
    assert isinstance(body["error"], str)


def test_param_and_headers_default():
    exc = TollhouseError("x")
    assert exc.param is None
    assert exc.headers == {}
    assert str(exc) == "x"
    assert openai_body(exc)["error"]["param"] is None


def test_headers_are_carried():
    exc = errors_module.RateLimited("slow down", headers={"retry-after": "3"})
    assert exc.headers == {"retry-after": "3"}


# --- UpstreamError: what the provider said decides the status ------------------------


@pytest.mark.parametrize("upstream_status", [401, 403])
def test_provider_credential_failures_are_502_not_the_clients_fault(upstream_status):
    exc = UpstreamError("provider said no", upstream_status=upstream_status)
    assert exc.status_code == 502
    assert openai_body(exc)["error"]["type"] == "api_error"


@pytest.mark.parametrize("upstream_status", [400, 404, 409, 413, 422])
def test_upstream_4xx_is_passed_on(upstream_status):
    exc = UpstreamError("provider said no", upstream_status=upstream_status)
    assert exc.status_code == upstream_status
    assert openai_body(exc)["error"]["type"] == "invalid_request_error"
    assert openai_body(exc)["error"]["code"] == "upstream_error"


def test_upstream_429_keeps_its_status_and_is_a_rate_limit_error():
    exc = UpstreamError("slow down", upstream_status=429, headers={"retry-after": "2"})
    assert exc.status_code == 429
    assert openai_body(exc)["error"]["type"] == "rate_limit_error"
    assert anthropic_body(exc)["error"]["type"] == "rate_limit_error"
    assert exc.headers == {"retry-after": "2"}


@pytest.mark.parametrize("upstream_status", [500, 501, 502, 503, 504, 529, 599])
def test_upstream_5xx_becomes_502(upstream_status):
    exc = UpstreamError("provider broke", upstream_status=upstream_status)
    assert exc.status_code == 502
    assert openai_body(exc)["error"]["type"] == "api_error"
    assert anthropic_body(exc)["error"]["type"] == "api_error"


def test_upstream_without_status_is_502():
    exc = UpstreamError("connection refused")
    assert exc.upstream_status is None
    assert exc.status_code == 502


def test_upstream_timeout_is_504():
    exc = UpstreamTimeout("too slow")
    assert exc.status_code == 504
    assert openai_body(exc)["error"]["code"] == "upstream_timeout"
    assert anthropic_body(exc)["error"]["type"] == "api_error"


@pytest.mark.parametrize("upstream_status", [200, 302, 399])
def test_upstream_non_error_status_is_still_502(upstream_status):
    # A 2xx/3xx the gateway could not use is the provider's fault, not the client's.
    exc = UpstreamError("unusable answer", upstream_status=upstream_status)
    assert exc.status_code == 502
