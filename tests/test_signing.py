"""Webhook signatures, as a receiver checks ours and as we check a sender's."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollhouse.alerts.signing import SignatureError, sign, verify

SECRET = "whsec_test"
NOW = 1_790_000_000
HEX = "0" * 64


@given(st.binary(max_size=2000), st.text(min_size=1, max_size=40))
def test_a_signed_body_verifies(body, secret):
    header = sign(secret, body, NOW)
    assert verify(header, body, secret, now=NOW) == NOW


def test_the_header_is_what_the_docs_tell_a_receiver_to_compute():
    body = b'{"event":"threshold_crossed"}'
    header = sign(SECRET, body, NOW)
    t, v1 = (part.split("=", 1)[1] for part in header.split(","))
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert (t, v1) == (str(NOW), expected)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing"),
        ("", "missing"),
        ("v1=" + "a" * 64, "malformed"),
        (f"t={NOW}", "malformed"),
        ("t=soon,v1=" + "a" * 64, "malformed"),
        (f"t={NOW - 301},v1={HEX}", "stale"),
        (f"t={NOW + 301},v1={HEX}", "stale"),
        (f"t={NOW},v1={HEX}", "does not match"),
    ],
)
def test_every_bad_header_is_refused_with_its_reason(header, message):
    with pytest.raises(SignatureError, match=message):
        verify(header, b"{}", SECRET, now=NOW)


def test_a_changed_body_or_secret_fails():
    header = sign(SECRET, b'{"spend": 1}', NOW)
    with pytest.raises(SignatureError):
        verify(header, b'{"spend": 2}', SECRET, now=NOW)
    with pytest.raises(SignatureError):
        verify(header, b'{"spend": 1}', "other", now=NOW)


def test_any_of_several_signatures_is_enough_during_a_secret_rotation():
    body = b"{}"
    old = sign("old", body, NOW).split(",")[1]
    new = sign(SECRET, body, NOW)
    assert verify(f"{new},{old}", body, SECRET, now=NOW) == NOW
    assert verify(f"t={NOW},{old}", body, "old", now=NOW) == NOW


def test_the_receiver_code_in_the_docs_accepts_ours_and_refuses_a_change():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "alerts.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(code, namespace)  # the snippet a receiver would copy
    body = b'{"event":"threshold_crossed","spend":80}'
    header = sign(SECRET, body)
    assert namespace["verify"](header, body, SECRET) is True
    assert namespace["verify"](header, body + b" ", SECRET) is False
    assert namespace["verify"](sign(SECRET, body, NOW - 3600), body, SECRET) is False
