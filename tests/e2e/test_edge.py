"""A real ``tollhouse serve`` under hostile bodies: refused unread, memory unchanged."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from tests.web.rawhttp import (
    closed_by_peer,
    connect,
    head,
    read_response,
    send_ignoring_close,
)

from tollhouse.cli.processes import free_port
from tollhouse.web.protocol import LINGER_S

pytestmark = pytest.mark.e2e

MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def keyed_gateway(tollhouse):
    upstream = tollhouse.dev_upstream()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = tollhouse.env(upstream, TOLLHOUSE_ALLOW_ANONYMOUS="false")
    process = tollhouse.start("gateway", ["serve", "--port", str(port)], env, url + "/readyz")
    return port, process.proc.pid


@pytest.mark.parametrize(
    ("framing", "status"),
    [({"content-length": str(100 * MB)}, 413), ({"transfer-encoding": "chunked"}, 401)],
)
def test_a_100_mb_unauthenticated_body_is_refused_unread(keyed_gateway, framing, status):
    port, pid = keyed_gateway
    for _ in range(20):  # warm up: first requests allocate what every request reuses
        httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "x"})
    before = rss_bytes(pid)
    sock = connect(port)
    with sock:
        sock.sendall(head("POST", "/v1/chat/completions", framing))
        answered, headers, _ = read_response(sock)
        assert answered == status and headers["connection"] == "close"
        # Send the 100 MB anyway, as an attacker would: the server stops reading.
        piece = b"x" * MB
        if "transfer-encoding" in framing:
            piece = f"{MB:x}\r\n".encode() + piece + b"\r\n"
        sent = send_ignoring_close(sock, piece * 100)
        # What was sent was dropped unparsed (a lingering close, so the client can still
        # read the answer), and the server ends the connection once the client is done.
        sock.shutdown(socket.SHUT_WR)
        assert closed_by_peer(sock, timeout=LINGER_S + 2)
    grown = rss_bytes(pid) - before
    assert grown < 4 * MB, f"server grew {grown / MB:.1f} MB after {sent / MB:.0f} MB were sent"
