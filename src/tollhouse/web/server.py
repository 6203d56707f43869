"""The one uvicorn configuration, for ``tollhouse serve`` and the tests' live servers."""

from __future__ import annotations

from typing import Any

import uvicorn

from tollhouse.config import Settings, proxy_list
from tollhouse.web.protocol import GuardedHttpToolsProtocol


def protocol_for(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The HTTP protocol class with ``settings``' limits."""
    return type(
        "TollhouseHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_kb * 1024,
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
        },
    )


def server_config(settings: Settings, app: Any, **overrides: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app``; ``overrides`` replace any (tests pick the loop)."""
    proxies = proxy_list(settings.trusted_proxies)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": protocol_for(settings),
        "lifespan": "on",
        "access_log": settings.access_log,
        "log_config": None,
        "timeout_graceful_shutdown": int(settings.shutdown_timeout_s) or None,
        "backlog": 4096,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: behind a same-host
        # proxy every internet client would look local, and "loopback" is the admin
        # API's credential when no admin key is set. Only configured proxies count.
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": proxies or None,
        "limit_concurrency": settings.max_connections,
        "server_header": False,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
