"""``tollhouse serve``: the gateway under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import click
import uvicorn

from tollhouse.admin.auth import is_loopback
from tollhouse.app import create_app
from tollhouse.cli.options import config_option, settings_from
from tollhouse.config import Settings
from tollhouse.ops.logging import configure_logging


def check_startup(settings: Settings) -> None:
    """Refuse settings that cannot work, naming the settings to change."""
    if settings.admin_key is None and not is_loopback(settings.host):
        raise click.ClickException(
            f"refusing to listen on {settings.host} without an admin key: the admin API "
            "would be open to the network. Set TOLLHOUSE_ADMIN_KEY, or bind 127.0.0.1."
        )
    if settings.workers > 1 and (settings.is_sqlite or not settings.redis_url):
        raise click.ClickException(
            f"--workers {settings.workers} needs shared state: set TOLLHOUSE_DATABASE_URL to "
            "postgresql+asyncpg://… and TOLLHOUSE_REDIS_URL to redis://…, or run one worker."
        )
    if settings.workers > 1:
        raise click.ClickException(
            "multiple workers in one process group are not supported yet: run one "
            "`tollhouse serve` per replica behind a load balancer"
        )


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
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=settings.access_log,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s) or None,
        backlog=4096,
    )
    uvicorn.Server(config).run()
