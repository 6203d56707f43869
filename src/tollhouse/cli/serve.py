"""``tollhouse serve``: the gateway under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import contextlib
import socket
from types import FrameType

import click
import uvicorn

from tollhouse.admin.auth import is_loopback
from tollhouse.app import Tollhouse, create_app
from tollhouse.cli.options import config_option, settings_from
from tollhouse.cli.supervisor import run_workers
from tollhouse.config import Settings
from tollhouse.ops.logging import configure_logging
from tollhouse.web.server import server_config
from tollhouse.web.services import NotStarted


def check_startup(settings: Settings) -> None:
    """Refuse settings that cannot work, naming the settings to change."""
    if settings.admin_key is None and not is_loopback(settings.host):
        raise click.ClickException(
            f"refusing to listen on {settings.host} without an admin key: the admin API "
            "would be open to the network. Set TOLLHOUSE_ADMIN_KEY, or bind 127.0.0.1."
        )
    if settings.bus_backend == "memory" and not settings.agent_worker_in_process:
        raise click.ClickException(
            "agent_worker_in_process is off with the memory bus: no process could answer "
            "agent sessions. Turn it on, or set TOLLHOUSE_BUS_BACKEND to redis or kafka and "
            "run `tollhouse worker --role conversation --role tools`."
        )
    if settings.workers > 1 and (settings.is_sqlite or not settings.redis_url):
        raise click.ClickException(
            f"--workers {settings.workers} needs shared state: set TOLLHOUSE_DATABASE_URL to "
            "postgresql://… and TOLLHOUSE_REDIS_URL to redis://…, or run one worker."
        )


class GatewayServer(uvicorn.Server):
    """uvicorn's server, with two differences on SIGTERM/SIGINT.

    ``/readyz`` turns 503 (draining) at once, and a completed graceful shutdown exits 0:
    uvicorn re-raises the signal after shutting down, which would make every clean stop
    look like a crash (exit -15) to supervisors and tests.
    """

    def __init__(self, config: uvicorn.Config, app: Tollhouse) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Before start-up is done there is nothing to drain: uvicorn serves nothing once
        # it has been told to exit.
        with contextlib.suppress(NotStarted):
            self._app.services.draining = True
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


@click.command()
@config_option
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 4000).")
@click.option("--workers", type=int, default=None, help="Server processes (default 1).")
def serve(config_file: str | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway (SQLite by default; Postgres/Redis by settings)."""
    settings = settings_from(config_file, host=host, port=port, workers=workers)
    check_startup(settings)
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        run_workers(settings, serve_one)
    else:
        serve_one(settings)


def serve_one(settings: Settings, sock: socket.socket | None = None) -> None:
    """One gateway process; on ``sock`` when a supervisor bound it already."""
    app = create_app(settings)
    sockets = [sock] if sock is not None else None
    GatewayServer(server_config(settings, app), app).run(sockets=sockets)
