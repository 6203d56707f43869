"""Webhook signatures: ``Tollhouse-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``.

The same scheme signs what we send and verifies what we receive (``POST
/api/webhooks/budget``). The timestamp is inside the signed text, so a captured request
cannot be replayed outside the tolerance; several ``v1=`` values may be present while a
sender rotates its secret, and any one matching is enough. Comparison is constant-time.

Verification is two steps so that a receiver can refuse before reading a body:
``parse_header`` checks the header's form and freshness (no body needed), ``check``
the HMAC over the body.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from tollhouse.web.query import ascii_digits

HEADER = "Tollhouse-Signature"
EVENT_ID_HEADER = "Tollhouse-Event-Id"
DEFAULT_TOLERANCE_S = 300
# A header longer than this is not a signature (a few v1 values while a sender rotates).
_MAX_HEADER_CHARS = 1024
_HEX = frozenset("0123456789abcdef")


class SignatureError(Exception):
    """Why a signature was refused (the message is safe to return to the sender)."""


@dataclass(frozen=True, slots=True)
class SignatureHeader:
    timestamp: int
    candidates: tuple[str, ...]


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body``, signed now (or at ``timestamp``)."""
    when = int(time.time()) if timestamp is None else timestamp
    return f"t={when},v1={signature(secret, when, body)}"


def parse_header(
    header: str | None, *, tolerance_s: int = DEFAULT_TOLERANCE_S, now: float | None = None
) -> SignatureHeader:
    """The header's timestamp and signatures; ``SignatureError`` if malformed or stale."""
    if not header:
        raise SignatureError(f"missing {HEADER} header")
    malformed = SignatureError(f"malformed {HEADER} header: expected t=<unix>,v1=<hex>")
    if len(header) > _MAX_HEADER_CHARS:
        raise malformed
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            # ASCII digits only: str.isdigit() also accepts "²" and "١", which int()
            # refuses or reads as another number.
            if not ascii_digits(value):
                raise malformed
            timestamp = int(value)
        elif name == "v1":
            if len(value) != 64 or not _HEX.issuperset(value):
                raise malformed
            candidates.append(value)
    if timestamp is None or not candidates:
        raise malformed
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"stale {HEADER}: timestamp outside the {tolerance_s}s tolerance")
    return SignatureHeader(timestamp, tuple(candidates))


def check(parsed: SignatureHeader, body: bytes, secret: str) -> None:
    """Raise ``SignatureError`` unless one of the header's signatures matches ``body``."""
    expected = signature(secret, parsed.timestamp, body).encode("ascii")
    # Every candidate is compared (no early exit) so timing says nothing about which.
    matched = False
    for candidate in parsed.candidates:
        matched |= hmac.compare_digest(candidate.encode("ascii"), expected)
    if not matched:
        raise SignatureError(f"{HEADER} does not match the body")


def verify(
    header: str | None,
    body: bytes,
    secret: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check ``header`` against ``body``; returns its timestamp or raises ``SignatureError``."""
    parsed = parse_header(header, tolerance_s=tolerance_s, now=now)
    check(parsed, body, secret)
    return parsed.timestamp
