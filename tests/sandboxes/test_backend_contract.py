"""One contract for every ``SandboxBackend``: a sandbox it made exists until its lease
ends; ending one either deletes it (gone, its row goes) or recycles it (still there);
``orphans`` removes what no row names and nothing else; ``execute`` runs a command in
the sandbox or refuses clearly. Then what only ``local`` does: a real directory, and
commands confined to it."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from tollhouse.errors import BadRequest
from tollhouse.sandboxes.backends import LocalBackend, SandboxBackend, StaticBackend
from tollhouse.sandboxes.runner import Limits

UID = 200_500 if os.geteuid() == 0 else None
LIMITS = Limits(wall_seconds=10)


@pytest.fixture(params=["local", "static"])
def backend(request, tmp_path) -> SandboxBackend:
    return LocalBackend(tmp_path / "pool") if request.param == "local" else StaticBackend()


def row(sandbox_id: str, backend: SandboxBackend) -> SimpleNamespace:
    return SimpleNamespace(id=sandbox_id, uid=UID if backend.name == "local" else None)


async def test_a_sandbox_exists_until_its_lease_ends(backend):
    sandbox = row("sbx_contract1", backend)
    await backend.create(sandbox.id, sandbox.uid)
    assert await backend.exists(sandbox)
    ending = await backend.destroy(sandbox)
    assert ending in ("deleted", "recycled")
    assert await backend.exists(sandbox) is (ending == "recycled")


async def test_orphans_are_only_what_no_row_names(backend):
    kept, stray = row("sbx_kept", backend), row("sbx_stray", backend)
    for sandbox in (kept, stray):
        await backend.create(sandbox.id, sandbox.uid)
    removed = await backend.orphans({kept.id})
    assert removed in ([], ["sbx_stray"])
    assert await backend.exists(kept)
    if removed:
        assert not await backend.exists(stray)
    assert await backend.orphans({kept.id}) == []  # nothing left to remove


async def test_execute_runs_in_the_sandbox_or_refuses(backend):
    sandbox = row("sbx_exec", backend)
    await backend.create(sandbox.id, sandbox.uid)
    if backend.name == "static":
        with pytest.raises(BadRequest, match="static environment"):
            await backend.execute(sandbox, ["true"], LIMITS)
        return
    outcome = await backend.execute(sandbox, ["sh", "-c", "echo hi > note; cat note; pwd"], LIMITS)
    assert outcome.exit_code == 0 and outcome.stopped_by is None
    lines = outcome.stdout.decode().split()
    assert lines[0] == "hi" and lines[1].endswith("/sbx_exec")


async def test_local_sandboxes_are_private_directories(tmp_path):
    backend = LocalBackend(tmp_path / "pool")
    await backend.create("sbx_private", UID)
    workdir = tmp_path / "pool" / "sbx_private"
    info = workdir.stat()
    assert info.st_mode & 0o777 == 0o700
    if UID is not None:
        assert (info.st_uid, info.st_gid) == (UID, UID)
    sandbox = SimpleNamespace(id="sbx_private", uid=UID)
    await backend.execute(sandbox, ["sh", "-c", "mkdir -p a/b && echo x > a/b/c"], LIMITS)
    assert (workdir / "a" / "b" / "c").read_text() == "x\n"
    assert await backend.destroy(sandbox) == "deleted"
    assert not workdir.exists()


@pytest.mark.parametrize("bad", ["../escape", "sbx_/../x", "not-a-sandbox", "sbx_a/b"])
def test_a_local_path_is_only_ever_a_sandbox_id(tmp_path, bad):
    with pytest.raises(ValueError, match="not a sandbox id"):
        LocalBackend(Path(tmp_path)).workdir(bad)
