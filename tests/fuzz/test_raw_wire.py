"""What httpx cannot send: malformed key headers, odd request targets, lying framing.

Written byte for byte to the live gateways' sockets (``gateways.raw_request``). Each case
must be answered below 500 in the documented error shape, and nothing may be logged as
an unhandled error; on the governed gateway every malformed key is a 401, and so is
every malformed admin key on ``/api/*``.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from tests.fuzz import corpus
from tests.fuzz.gateways import ADMIN_HEADERS, Gateway, raw_request, read_response, verdict


def _settle(gateway: Gateway) -> None:
    """Give the server a moment to log what a dropped connection made it raise."""
    time.sleep(0.05)


@pytest.mark.parametrize("case", corpus.header_cases(), ids=lambda c: c.id)
def test_malformed_key_headers(fuzz_gateway, case):
    admin = case.path.startswith("/api/")
    expect = frozenset({401}) if admin or fuzz_gateway.name == "governed" else None
    mark = fuzz_gateway.mark()
    response = raw_request(fuzz_gateway, case.method, case.path, case.headers, case.body)
    problems = verdict(
        fuzz_gateway,
        case.id,
        case.path,
        mark,
        response and response.status,
        response.content_type if response else "",
        response.content if response else b"",
        expect,
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", corpus.url_cases(), ids=lambda c: c.id)
def test_odd_targets_and_methods(fuzz_gateway, case):
    headers = [*case.headers]
    if case.path.startswith("/api/"):
        headers += ADMIN_HEADERS.items()
    else:
        headers += fuzz_gateway.auth.items()
    mark = fuzz_gateway.mark()
    response = raw_request(fuzz_gateway, case.method, case.path, headers, case.body)
    problems = verdict(
        fuzz_gateway,
        case.id,
        case.path,
        mark,
        response and response.status,
        response.content_type if response else "",
        response.content if response else b"",
        method=case.method,
    )
    assert not problems, "\n".join(problems)


_CHAT = json.dumps(corpus.CHAT_BODY).encode()

# (request head after the request line, body, statuses allowed or None for any < 500).
FRAMING: dict[str, tuple[bytes, bytes, frozenset[int] | None]] = {
    "content-length-longer-than-body": (b"content-length: 100\r\n", b'{"model": "x"}', None),
    "content-length-shorter-than-body": (b"content-length: 5\r\n", _CHAT, None),
    "content-length-negative": (b"content-length: -1\r\n", _CHAT, frozenset({400})),
    "content-length-not-a-number": (b"content-length: abc\r\n", _CHAT, frozenset({400})),
    "content-length-huge": (
        b"content-length: 99999999999999999999999\r\n",
        _CHAT,
        frozenset({400, 413}),
    ),
    "content-length-twice-differing": (
        b"content-length: 5\r\ncontent-length: " + str(len(_CHAT)).encode() + b"\r\n",
        _CHAT,
        frozenset({400}),
    ),
    "content-length-and-chunked": (
        b"content-length: 5\r\ntransfer-encoding: chunked\r\n",
        b"%x\r\n" % len(_CHAT) + _CHAT + b"\r\n0\r\n\r\n",
        None,
    ),
    "chunked-bad-size": (b"transfer-encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n", None),
    "chunked-truncated": (b"transfer-encoding: chunked\r\n", b"ff\r\n{}", None),
    "chunked-over-the-limit": (b"transfer-encoding: chunked\r\n", b"", frozenset({413})),
}


@pytest.mark.parametrize("name", list(FRAMING))
def test_lying_framing(fuzz_gateway, name):
    extra, body, expect = FRAMING[name]
    path = corpus.CHAT
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n".encode()
        + "".join(f"{k}: {v}\r\n" for k, v in fuzz_gateway.auth.items()).encode()
        + extra
        + b"connection: close\r\n\r\n"
    )
    mark = fuzz_gateway.mark()
    if name == "chunked-over-the-limit":
        response = _send_chunked(fuzz_gateway, head, corpus.LARGE)
    else:
        response = raw_request(
            fuzz_gateway, "POST", path, head=head, body=body, half_close=True, timeout=5
        )
    _settle(fuzz_gateway)
    if response is None and expect is None:
        # The client broke off mid-request: no answer is due, but nothing may blow up.
        problems = [p for p in verdict(fuzz_gateway, name, path, mark, 200) if "logged" in p]
    else:
        problems = verdict(
            fuzz_gateway,
            name,
            path,
            mark,
            response and response.status,
            response.content_type if response else "",
            response.content if response else b"",
            expect,
        )
    assert not problems, "\n".join(problems)


def _send_chunked(gateway: Gateway, head: bytes, total: int):
    """``total`` bytes of a JSON string in 1 MiB chunks, stopping if the server answers."""
    chunk = b"x" * (1024 * 1024)
    prefix = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
    with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=30) as sock:
        try:
            sock.sendall(head + b"%x\r\n" % len(prefix) + prefix + b"\r\n")
            for _ in range(total // len(chunk)):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            tail = b'"}]}'
            sock.sendall(b"%x\r\n" % len(tail) + tail + b"\r\n0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) before the whole body: the answer is read below
        return read_response(sock, "POST")
