"""Background loops stop when cancelled, even when the cancel lands in the same loop turn
as their wake-up: Python 3.11's ``asyncio.wait_for`` drops such a cancel, and a lifespan
shutdown then waits forever for the loop it cancelled."""

from __future__ import annotations

import asyncio

import pytest

from tollhouse.app import Tollhouse
from tollhouse.background import woken


async def test_a_loop_cancelled_as_it_is_woken_stops() -> None:
    event = asyncio.Event()

    async def wake_loop() -> None:
        while True:
            await woken(event, 10)
            event.clear()

    task = asyncio.create_task(wake_loop())
    await asyncio.sleep(0)  # it is waiting now
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(2):
            await task


async def test_woken_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await woken(event, 0.01) is False
    event.set()
    assert await woken(event, 0.01) is True


async def test_the_alert_dispatcher_stops_when_stopped_as_alerts_are_written(
    app: Tollhouse,
) -> None:
    """The shutdown order that hung: the alert writer sets the dispatcher's wake-up event,
    then the dispatcher is stopped in the same turn."""

    def dispatching() -> bool:
        tasks = asyncio.all_tasks()
        return any(t.get_name() == "tollhouse-alert-dispatcher" and not t.done() for t in tasks)

    assert dispatching()
    app.services.alerts.on_written.set()
    async with asyncio.timeout(5):  # hung forever before the fix
        await app.services.dispatcher.stop()
    assert not dispatching()
