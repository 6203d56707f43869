"""Webhook signatures: ``Tollhouse-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``.

The same scheme signs what we send and verifies what we receive (``POST
/api/webhooks/budget``). The timestamp is inside the signed text, so a captured request
cannot be replayed outside the tolerance; several ``v1=`` values may be present while a
sender rotates its secret, and any one matching is enough. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "Tollhouse-Signature"
EVENT_ID_HEADER = "Tollhouse-Event-Id"
DEFAULT_TOLERANCE_S = 300


class SignatureError(Exception):
    """Why a signature was refused (the message is safe to return to the sender)."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body``, signed now (or at ``timestamp``)."""
    when = int(time.time()) if timestamp is None else timestamp
    return f"t={when},v1={signature(secret, when, body)}"


def verify(
    header: str | None,
    body: bytes,
    secret: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check ``header`` against ``body``; returns its timestamp or raises ``SignatureError``."""
    if not header:
        raise SignatureError(f"missing {HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError(f"malformed {HEADER} header: expected t=<unix>,v1=<hex>")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"stale {HEADER}: timestamp outside the {tolerance_s}s tolerance")
    expected = signature(secret, timestamp, body)
    # Every candidate is compared (no early exit) so timing says nothing about which.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate, expected)
    if not matched:
        raise SignatureError(f"{HEADER} does not match the body")
    return timestamp
