"""``tollhouse worker``: work kept out of the gateway processes.

- ``--role alerts`` (the default): the alert dispatcher alone (every ``tollhouse serve``
  also dispatches; claims never overlap);
- ``--role conversation``: the agents' conversation worker;
- ``--role tools``: the agents' tool executor.

Roles can be combined (``--role conversation --role tools``). The agent roles need a bus
other processes reach (``bus_backend: redis`` or ``kafka``); they start the same
services a gateway process has — admission, policies, ledger, broker — without serving
HTTP, so an agent's model calls go through the same code as a ``/v1`` request
(docs/agents.md, *Workers*).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from tollhouse.agents.setup import ROLES, Role, start_workers
from tollhouse.alerts.dispatcher import Dispatcher
from tollhouse.app import services_running
from tollhouse.bus.events import TOOL_RESULTS
from tollhouse.cli.options import config_option, settings_from
from tollhouse.config import Settings
from tollhouse.crypto import SecretBox
from tollhouse.db import create_engine
from tollhouse.ops.logging import configure_logging


@click.command()
@config_option
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(["alerts", *ROLES]),
    default=("alerts",),
    show_default=True,
    help="What this process does (repeatable).",
)
def worker(config_file: str | None, roles: tuple[str, ...]) -> None:
    """Run alert deliveries or agent workers until SIGTERM or Ctrl-C."""
    agent_roles = tuple(r for r in ROLES if r in roles)
    overrides = {"agent_worker_in_process": False} if agent_roles else {}
    settings = settings_from(config_file, **overrides)
    if agent_roles and settings.bus_backend == "memory":
        raise click.ClickException(
            "agent workers in their own process need a shared bus: set "
            "TOLLHOUSE_BUS_BACKEND to redis or kafka (the memory bus lives in one process)"
        )
    configure_logging(settings.log_level, settings.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(settings, "alerts" in roles, agent_roles))


async def _run(settings: Settings, alerts: bool, roles: tuple[Role, ...]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        if alerts:
            await _dispatch(settings, stack)
        if roles:
            # No streams here: a conversation worker waits only for its tool results.
            listen = (TOOL_RESULTS,) if "conversation" in roles else ()
            services = await stack.enter_async_context(services_running(settings, listen))
            await start_workers(services, roles, stack)
        await stop.wait()


async def _dispatch(settings: Settings, stack: contextlib.AsyncExitStack) -> None:
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    engine = create_engine(settings)
    stack.push_async_callback(engine.dispose)
    dispatcher = Dispatcher(engine, settings, SecretBox.from_setting(secret))
    await dispatcher.start()
    stack.push_async_callback(dispatcher.stop)
