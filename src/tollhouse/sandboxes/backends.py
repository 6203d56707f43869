"""Where sandboxes live: one ``SandboxBackend`` Protocol, two backends, one contract
suite (``tests/sandboxes/test_backend_contract.py``; docs/sandboxes.md, *Backends*).

- ``local`` — a real work directory per sandbox under ``sandbox_dir``, commands run in
  it by ``runner.run``: a separate process group, as the sandbox's own uid when the
  server runs as root, under rlimits, a wall clock and an output cap. Deleting one
  removes its directory (and kills whatever its uid still runs).
- ``static`` — environments the operator registered (an external lab with its URL and
  credentials, encrypted at rest). Tollhouse neither creates nor destroys them: a lease
  that ends hands the sandbox back to the pool (``recycled``), for the operator's own
  tooling to reset.

The broker (``pool.py``) holds the state; a backend only makes, checks, clears and runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from tollhouse.errors import BadRequest
from tollhouse.sandboxes import runner
from tollhouse.sandboxes.runner import Limits, Outcome

Ending = Literal["deleted", "recycled"]


class SandboxBackend(Protocol):
    name: str

    async def create(self, sandbox_id: str, uid: int | None) -> None:
        """Make the sandbox ready to lease (``local``: its work directory)."""

    async def destroy(self, row: Any) -> Ending:
        """Its lease is over: ``deleted`` (the row goes) or ``recycled`` (back in the
        pool). Raises when it could not: the sandbox is then marked ``failed``."""

    async def exists(self, row: Any) -> bool:
        """Whether what the row describes is still there (``sync``)."""

    async def orphans(self, known: set[str]) -> list[str]:
        """What the backend holds that no row names (``sync`` removes it)."""

    async def execute(
        self, row: Any, argv: Sequence[str], limits: Limits, stdin: bytes | None = None
    ) -> Outcome:
        """Run a command in the sandbox."""


class LocalBackend:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def workdir(self, sandbox_id: str) -> Path:
        if not sandbox_id.startswith("sbx_") or "/" in sandbox_id or ".." in sandbox_id:
            raise ValueError(f"not a sandbox id: {sandbox_id!r}")
        return self.root / sandbox_id

    async def create(self, sandbox_id: str, uid: int | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        await asyncio.to_thread(runner.prepare_workdir, self.workdir(sandbox_id), uid)

    async def destroy(self, row: Any) -> Ending:
        if row.uid is not None:
            await runner.kill_uid(row.uid)  # nothing of it may outlive its directory
        await asyncio.to_thread(shutil.rmtree, self.workdir(row.id), ignore_errors=False)
        return "deleted"

    async def exists(self, row: Any) -> bool:
        return self.workdir(row.id).is_dir()

    async def orphans(self, known: set[str]) -> list[str]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.name.startswith("sbx_")]
        stray = [p for p in found if p.name not in known]
        for path in stray:
            await asyncio.to_thread(shutil.rmtree, path, True)
        return sorted(p.name for p in stray)

    async def execute(
        self, row: Any, argv: Sequence[str], limits: Limits, stdin: bytes | None = None
    ) -> Outcome:
        return await runner.run(argv, self.workdir(row.id), limits, uid=row.uid, stdin=stdin)


class StaticBackend:
    name = "static"

    async def create(self, sandbox_id: str, uid: int | None) -> None:
        return None  # registered by the operator: nothing to make

    async def destroy(self, row: Any) -> Ending:
        return "recycled"

    async def exists(self, row: Any) -> bool:
        return True  # Tollhouse cannot see inside an external environment

    async def orphans(self, known: set[str]) -> list[str]:
        return []

    async def execute(
        self, row: Any, argv: Sequence[str], limits: Limits, stdin: bytes | None = None
    ) -> Outcome:
        raise BadRequest(
            f"sandbox {row.id!r} is a static environment: Tollhouse runs commands in local "
            "sandboxes only; reach it at its url"
        )


def backends(root: Path) -> dict[str, SandboxBackend]:
    return {"local": LocalBackend(root), "static": StaticBackend()}


def sandbox_uid(base: int, offset: int) -> int | None:
    """The uid a new local sandbox's commands run as: its own when the server is root
    (``None`` otherwise: commands run as the server's user)."""
    return base + offset if os.geteuid() == 0 else None
