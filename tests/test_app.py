"""``create_app``'s lifespan: a start-up that fails stops what it had started; the app's
services exist from the end of start-up on, and not before."""

from __future__ import annotations

import asyncio

import pytest

from tollhouse.app import create_app
from tollhouse.web.services import NotStarted


async def test_a_failed_start_up_leaves_no_task_running(make_settings):
    # A Redis URL the client refuses fails start-up after the recorder has started (set
    # past validation, which refuses it first since settings check it).
    settings = make_settings(providers={}).model_copy(update={"redis_url": "http://127.0.0.1:1"})
    app = create_app(settings)
    before = asyncio.all_tasks()
    with pytest.raises(ValueError, match="Redis URL"):
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover - start-up fails
    # The recorder, started before the failure, was stopped (its task, its spool file);
    # the database engine disposed. ResourceWarning is an error in this suite.
    assert sorted(t.get_name() for t in asyncio.all_tasks() - before) == []
    with pytest.raises(NotStarted):
        _ = app.services


async def test_services_exist_from_start_up_on(make_settings):
    app = create_app(make_settings(providers={}))
    with pytest.raises(NotStarted, match="has not started"):
        _ = app.services
    async with app.router.lifespan_context(app):
        services = app.services
        assert (services.ready, services.draining) == (True, False)
    # Kept after shutdown, so that /readyz can say it is draining.
    assert app.services is services
    assert (services.ready, services.draining) == (False, True)
