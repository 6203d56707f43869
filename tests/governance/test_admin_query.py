"""Query parameters of the admin API: anything odd is a 400 naming the parameter, on
SQLite and Postgres — never a 500."""

from __future__ import annotations

import pytest
from tests.support import running

BAD = [
    ("/api/usage", {"limit": "²"}, "limit"),
    ("/api/usage", {"limit": "１０"}, "limit"),
    ("/api/usage", {"limit": "-1"}, "limit"),
    ("/api/usage", {"since": "²"}, "since"),
    ("/api/usage", {"until": "1²"}, "until"),
    ("/api/usage", {"key_id": "a\x00b"}, "key_id"),
    ("/api/usage", {"model": "\x00"}, "model"),
    ("/api/usage", {"cursor": "MjAyNi0wMS0wMVQwMDowMDowMCswMDowMHxhAGI"}, "cursor"),
    ("/api/alerts", {"limit": "²"}, "limit"),
    ("/api/alerts", {"limit": "٣"}, "limit"),
    ("/api/alerts", {"limit": "1\x00"}, "limit"),
    ("/api/governance/teams", {"customer_id": "x\x00"}, "customer_id"),
    ("/api/governance/virtual-keys", {"team_id": "\x00"}, "team_id"),
    ("/api/governance/virtual-keys", {"customer_id": "\x00"}, "customer_id"),
    ("/api/governance/usage-stats", {"virtual_key_id": "k\x00"}, "virtual_key_id"),
    ("/api/governance/customers", {"x\x00": "1"}, "query"),
]


@pytest.fixture
def settings(make_settings, both_stores):
    return make_settings(**both_stores)


async def test_bad_query_parameters_are_400(settings):
    async with running(settings) as (_, client):
        for path, params, name in BAD:
            response = await client.get(path, params=params)
            assert response.status_code == 400, (path, params, response.text)
            body = response.json()
            assert set(body) == {"error", "code"} and name in body["error"], (params, body)
        # Plain ASCII digits still work.
        assert (await client.get("/api/alerts", params={"limit": "7"})).status_code == 200
        assert (await client.get("/api/usage", params={"limit": "0007"})).status_code == 200
