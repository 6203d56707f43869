"""The spool when several processes start at once in one directory (``serve --workers``):
each keeps its own file, and none takes another's for an orphan."""

from __future__ import annotations

import threading
from pathlib import Path

from tollhouse.ledger.spool import Spool


def start_together(directory: Path, count: int) -> tuple[list[Spool], list[BaseException]]:
    """``count`` spools started at the same instant (threads stand in for processes:
    ``flock`` locks belong to open files, not to processes)."""
    barrier = threading.Barrier(count)
    spools: list[Spool] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            spools.append(Spool(directory))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return spools, errors


def test_spools_started_together_keep_their_own_files(tmp_path: Path) -> None:
    # Each file used to be named before it was locked: a spool starting beside it could
    # adopt the new, empty file as an orphan and remove it (the owner's later writes and
    # /readyz then failed), or hold its lock at the moment the owner took it.
    for attempt in range(60):
        directory = tmp_path / str(attempt)
        spools, errors = start_together(directory, 4)
        try:
            assert errors == []
            assert len(spools) == 4
            assert all(spool.own.path.exists() for spool in spools)
            assert all(spool.adopted == [] for spool in spools)
            assert sorted(directory.glob("usage-*.spool")) == sorted(s.own.path for s in spools)
        finally:
            for spool in spools:
                spool.close()
        assert list(directory.glob("usage-*")) == []  # empty files are removed at close
