"""``create_app``'s lifespan: what a start-up that fails leaves behind."""

from __future__ import annotations

import asyncio

import pytest

from tollhouse.app import create_app


@pytest.mark.xfail(
    strict=True,
    reason="app.py's lifespan starts the usage recorder (and the upstream sessions) before "
    "its try: a failure later in start-up leaks them; an AsyncExitStack lifespan, where "
    "each start registers its stop, fixes it (issue 10). Remove this mark then.",
)
async def test_a_failed_start_up_leaves_no_task_running(make_settings):
    # A Redis URL the client refuses fails start-up after the recorder has started.
    app = create_app(make_settings(providers={}, redis_url="http://127.0.0.1:1"))
    before = asyncio.all_tasks()
    try:
        with pytest.raises(ValueError, match="Redis URL"):
            async with app.router.lifespan_context(app):
                pass  # pragma: no cover - start-up fails
        assert sorted(t.get_name() for t in asyncio.all_tasks() - before) == []
    finally:  # leave nothing running or open for the next test
        recorder = getattr(app.state, "recorder", None)
        if recorder is not None:
            await recorder.stop()  # its task, and the spool file it holds
        leaked = asyncio.all_tasks() - before
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        engine = getattr(app.state, "engine", None)
        if engine is not None:
            await engine.dispose()
