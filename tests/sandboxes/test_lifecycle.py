"""A lease's life with a clock the test controls: it expires at ``allocated_at`` + lab +
grace and not a second before; what is marked is really deleted (a local sandbox's work
directory is gone) or recycled (a static one is available again); ``sync`` reconciles
the pool with the disk; the reaper refills a pool with a target; the admin operations."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from tests.sandboxes.helpers import admin, allocate, new_token, seed, track
from tests.support import JSON_WRITES, decode

from tollhouse.app import create_app

SECRET = "s" * 40


async def test_expiry_then_cleanup_deletes_the_work_directory(app, gateway, settings):
    token = await new_token(gateway)
    (sandbox_id,) = await seed(gateway, 1)
    workdir = Path(settings.sandbox_dir) / sandbox_id
    assert workdir.is_dir() and oct(workdir.stat().st_mode & 0o777) == "0o700"
    lease = decode(await allocate(gateway, token, "t", {"lab_duration_hours": 1}))["sandbox"]
    expires = datetime.fromisoformat(lease["expires_at"])
    broker = app.services.sandboxes

    assert await broker.auto_expire(expires - timedelta(seconds=1)) == 0
    assert (await admin(gateway, "GET", f"/sandboxes/{sandbox_id}"))["sandbox"]["status"] == (
        "allocated"
    )
    assert await broker.auto_expire(expires) == 1
    found = await admin(gateway, "GET", f"/sandboxes/{sandbox_id}")
    assert found["sandbox"]["status"] == "pending_deletion"

    report = await admin(gateway, "POST", "/sandboxes/cleanup")
    assert (report["deleted"], report["failed"]) == (1, 0)
    assert not workdir.exists()
    await admin(gateway, "GET", f"/sandboxes/{sandbox_id}", status=404)
    # The track's lease is over: it gets a new sandbox, not the old one.
    (fresh,) = await seed(gateway, 1)
    again = await allocate(gateway, token, "t")
    assert again.status_code == 201 and decode(again)["sandbox"]["id"] == fresh


async def test_the_admin_auto_expire_route(app, gateway):
    token = await new_token(gateway)
    await seed(gateway, 1)
    await allocate(gateway, token, "t", {"lab_duration_hours": 0.0001})  # 0.36 s + grace
    assert (await admin(gateway, "POST", "/sandboxes/auto-expire"))["expired"] == 0
    later = datetime.now().astimezone() + timedelta(minutes=16)
    assert await app.services.sandboxes.auto_expire(later) == 1


async def test_a_static_sandbox_is_recycled_with_its_credentials_kept_secret(make_settings):
    app = create_app(make_settings(secret_key=SECRET))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as client:
            body = {
                "name": "lab-eu-1",
                "url": "https://lab-1.example/",
                "external_id": "env-42",
                "credentials": {"username": "student", "password": "hunter2-long"},
            }
            made = (await admin(client, "POST", "/sandboxes", body, 201))["sandbox"]
            assert made["backend"] == "static" and "hunter2" not in str(made)
            await admin(client, "POST", "/sandboxes", body, 409)
            token = await new_token(client)
            lease = decode(await allocate(client, token, "t"))
            assert lease["credentials"] == body["credentials"]
            assert lease["sandbox"]["url"] == "https://lab-1.example/"
            path = f"/v1/sandboxes/{made['id']}"
            stranger = await client.get(path, headers=track(token, "other"))
            assert stranger.status_code == 403 and "hunter2" not in stranger.text
            owner = decode(await client.get(path, headers=track(token, "t")))
            assert owner["credentials"] == body["credentials"]
            listed = await admin(client, "GET", "/sandboxes")
            assert "hunter2" not in str(listed)

            await client.post(f"{path}/mark-for-deletion", headers=track(token, "t"))
            report = await admin(client, "POST", "/sandboxes/cleanup")
            assert report["recycled"] == 1
            back = (await admin(client, "GET", f"/sandboxes/{made['id']}"))["sandbox"]
            assert back["status"] == "available" and back["track_id"] is None
            assert back["expires_at"] is None
            assert (await allocate(client, token, "next")).status_code == 201


async def test_credentials_need_a_secret_key(gateway):
    body = {"name": "lab", "credentials": {"password": "x"}}
    error = (await admin(gateway, "POST", "/sandboxes", body, 400))["error"]
    assert "TOLLHOUSE_SECRET_KEY" in error


async def test_sync_reconciles_the_pool_with_the_disk(gateway, settings):
    first, second = await seed(gateway, 2)
    root = Path(settings.sandbox_dir)
    (root / first).rmdir()  # gone behind the broker's back
    stray = root / "sbx_stray"
    stray.mkdir()
    (stray / "left-over").write_text("x")
    report = await admin(gateway, "POST", "/sandboxes/sync")
    assert (report["missing"], report["orphans_removed"]) == (1, 1)
    assert not stray.exists() and (root / second).is_dir()
    found = (await admin(gateway, "GET", f"/sandboxes/{first}"))["sandbox"]
    assert found["status"] == "failed" and "no longer" in found["error"]
    token = await new_token(gateway)
    assert decode(await allocate(gateway, token, "t"))["sandbox"]["id"] == second


async def test_the_reaper_keeps_the_pool_at_its_target(make_settings):
    settings = make_settings(sandbox_pool_target=3, sandbox_reaper_interval_s=60)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as client:
            stats = await available(client, 3)  # the first pass fills it
            token = await new_token(client)
            for n in range(2):
                assert (await allocate(client, token, f"t{n}")).status_code == 201
            stats = await available(client, 3)  # a lease wakes the reaper: no minute's wait
            assert stats["by_status"] == {
                "available": 3,
                "allocated": 2,
                "pending_deletion": 0,
                "deleting": 0,
                "failed": 0,
            }


async def available(client: httpx.AsyncClient, count: int) -> dict:
    for _ in range(250):
        stats = await admin(client, "GET", "/sandboxes/stats")
        if stats["by_status"]["available"] == count:
            break
        await asyncio.sleep(0.02)
    return stats


async def test_listing_pages_and_filters(gateway):
    token = await new_token(gateway)
    made = await seed(gateway, 5)
    await allocate(gateway, token, "t")
    page = await admin(gateway, "GET", "/sandboxes?limit=2")
    assert page["count"] == 2 and page["next_cursor"] is not None
    seen = [s["id"] for s in page["sandboxes"]]
    while page["next_cursor"]:
        page = await admin(gateway, "GET", f"/sandboxes?limit=2&cursor={page['next_cursor']}")
        seen += [s["id"] for s in page["sandboxes"]]
    assert sorted(seen) == sorted(made)
    held = await admin(gateway, "GET", "/sandboxes?track_id=t")
    assert held["count"] == 1 and held["sandboxes"][0]["status"] == "allocated"
    assert (await admin(gateway, "GET", "/sandboxes?status=available"))["count"] == 4
    await admin(gateway, "GET", "/sandboxes?status=lost", status=400)
    operator_end = await admin(
        gateway, "POST", f"/sandboxes/{held['sandboxes'][0]['id']}/mark-for-deletion"
    )
    assert operator_end["sandbox"]["status"] == "pending_deletion"
