"""``tollhouse worker``: the alert dispatcher alone, for deployments that keep it out of
the gateway processes (every ``tollhouse serve`` also dispatches; claims never overlap).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from tollhouse.alerts.dispatcher import Dispatcher
from tollhouse.cli.options import config_option, settings_from
from tollhouse.crypto import SecretBox
from tollhouse.db import create_engine
from tollhouse.ops.logging import configure_logging


@click.command()
@config_option
def worker(config_file: str | None) -> None:
    """Send alert deliveries from the outbox until SIGTERM or Ctrl-C."""
    settings = settings_from(config_file)
    configure_logging(settings.log_level, settings.log_format)
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None

    async def run() -> None:
        engine = create_engine(settings)
        dispatcher = Dispatcher(engine, settings, SecretBox.from_setting(secret))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await dispatcher.start()
        try:
            await stop.wait()
        finally:
            await dispatcher.stop()
            await engine.dispose()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
