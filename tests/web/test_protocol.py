"""Connection-level limits of the server protocol, over real sockets.

Each test runs the live gateway (uvicorn with ``server_config``) with short limits and
misbehaves the way a slow or hostile client does.
"""

from __future__ import annotations

import time

import httpx
from tests.support import LiveServer
from tests.web.rawhttp import closed_by_peer, connect, head, read_response


def test_a_head_not_finished_in_time_gets_408_and_is_closed(make_settings):
    with LiveServer(make_settings(header_timeout_s=0.5)) as server:
        sock = connect(server.port)
        with sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-drip: ")
            status, headers, _ = read_response(sock, timeout=5)
            assert status == 408 and headers["connection"] == "close"
            assert closed_by_peer(sock)


def test_a_dripped_head_is_cut_at_the_timeout_not_renewed_per_byte(make_settings):
    with LiveServer(make_settings(header_timeout_s=1.0)) as server:
        sock = connect(server.port)
        with sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-drip: ")
            started = time.monotonic()
            status = None
            while time.monotonic() - started < 5:
                try:
                    sock.sendall(b"a")
                except (BrokenPipeError, ConnectionResetError):
                    break
                sock.settimeout(0.2)
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                status = int(data.split()[1]) if data else None
                break
            assert status == 408
            assert time.monotonic() - started < 3


def test_a_connection_that_never_asks_is_closed(make_settings):
    with LiveServer(make_settings(header_timeout_s=0.5)) as server:
        sock = connect(server.port)
        with sock:
            assert closed_by_peer(sock, timeout=5)


def test_a_head_past_the_size_limit_gets_431(make_settings):
    with LiveServer(make_settings(max_header_kb=8)) as server:
        sock = connect(server.port)
        with sock:
            # Just past the limit and no more, so the server has read everything sent when
            # it answers (unread bytes would turn its close into a reset).
            filler = b"".join(b"x-filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(9))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n" + filler)
            status, headers, _ = read_response(sock)
    assert status == 431 and headers["connection"] == "close"


def test_a_large_but_allowed_head_is_served(make_settings):
    with LiveServer(make_settings(max_header_kb=64)) as server:
        headers = {f"x-filler-{i}": "a" * 1000 for i in range(40)}
        response = httpx.get(f"{server.url}/healthz", headers=headers)
    assert response.status_code == 200


def test_a_body_not_sent_in_time_closes_the_connection(make_settings):
    with LiveServer(make_settings(body_timeout_s=0.5)) as server:
        sock = connect(server.port)
        with sock:
            sock.sendall(head("POST", "/v1/chat/completions", {"content-length": "100"}))
            sock.sendall(b'{"model": ')
            assert closed_by_peer(sock, timeout=5)
        # The server is fine afterwards, and nothing was recorded for the request.
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert server.usage() == []


def test_keep_alive_requests_each_get_a_fresh_head_timer(make_settings):
    with LiveServer(make_settings(header_timeout_s=0.5)) as server, httpx.Client() as client:
        for _ in range(4):
            assert client.get(f"{server.url}/healthz").status_code == 200
            time.sleep(0.3)  # under the timeout each time, over it in total


def test_requests_past_the_connection_limit_get_503(make_settings):
    with LiveServer(make_settings(max_connections=2)) as server:
        idle = [connect(server.port), connect(server.port)]
        try:
            time.sleep(0.2)
            response = httpx.get(f"{server.url}/healthz")
            assert response.status_code == 503
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        assert httpx.get(f"{server.url}/healthz").status_code == 200
