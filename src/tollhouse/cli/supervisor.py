"""The supervisor of ``tollhouse serve --workers N``: N gateway processes sharing one
listening socket.

The parent migrates the database once, binds the socket, forks the workers and then only
supervises: SIGTERM or SIGINT is passed to every worker (each drains its own requests,
flushes its ledger and settles, and exits), a worker that dies on its own is replaced,
and the parent exits 0 when every worker stopped cleanly. Workers share nothing but the
socket: state lives in Postgres and Redis, which ``check_startup`` insists on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

import click

from tollhouse.config import Settings
from tollhouse.db import create_engine
from tollhouse.db.schema import upgrade

_RESTART_BACKOFF_S = 1.0


def bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        raise click.ClickException(f"cannot listen on {where}: {exc}") from None
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


async def _migrate(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def run_workers(settings: Settings, serve_one: Callable[[Settings, socket.socket], None]) -> None:
    """Fork ``settings.workers`` processes running ``serve_one`` on one socket."""
    if settings.auto_migrate:
        asyncio.run(_migrate(settings))
    worker_settings = settings.model_copy(update={"auto_migrate": False})
    sock = bind(settings)
    children: dict[int, int] = {}  # pid → worker number
    stopping = False

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                serve_one(worker_settings, sock)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children[pid] = number

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for number in range(settings.workers):
        spawn(number)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        number = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            failed = failed or code != 0
            continue
        click.echo(f"worker {number} (pid {pid}) exited with {code}; starting another", err=True)
        time.sleep(_RESTART_BACKOFF_S)
        spawn(number)
    sock.close()
    sys.exit(1 if failed else 0)
