"""The spool: usage records the database would not take, on local disk until it does.

When a batch cannot be written (database down, failing over, unreachable), the recorder
appends it here — one JSON line per record, flushed and ``fsync``ed — and forgets it in
memory. While anything is spooled, newer batches are appended behind it, so records
reach the ledger in the order they were made. A replay pass inserts the oldest lines
first; the insert skips ids already in the ledger, so a replay interrupted by a crash and
done again writes each record exactly once.

Each process writes its own file (``usage-<random>.spool``) under an exclusive ``flock``,
taken before the file gets that name: a file of that name whose lock is free belongs to
a process that is gone, and the next recorder to start adopts and replays it, so a crash
with records on disk loses nothing. (Locked only after it was named, a starting worker's
new file was adopted, and removed as empty, by a worker starting beside it.)

Records name keys, teams and customers: the directory is ``0700`` and every file in it
``0600``, whatever the umask.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson

from tollhouse.ledger.schemas import UsageRecord

log = logging.getLogger("tollhouse.ledger")

_DECIMALS = {f.name for f in fields(UsageRecord) if f.type in ("Decimal", Decimal)}
_DATETIMES = {f.name for f in fields(UsageRecord) if f.type in ("datetime", datetime)}


def encode(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, default=str) + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    row: dict[str, Any] = orjson.loads(line)
    for name in _DECIMALS:
        if row.get(name) is not None:
            row[name] = Decimal(row[name])
    for name in _DATETIMES:
        if row.get(name) is not None:
            row[name] = datetime.fromisoformat(row[name])
    return row


class SpoolFile:
    """One spool file: appended at the end, consumed from ``offset`` (kept beside it)."""

    def __init__(self, path: Path, handle: IO[bytes]) -> None:
        self.path = path
        self._handle = handle
        self._offset_path = path.with_suffix(".offset")
        self.offset = _read_offset(self._offset_path)

    @property
    def pending(self) -> bool:
        return self.path.stat().st_size > self.offset

    def append(self, rows: list[dict[str, Any]]) -> None:
        self._handle.seek(0, os.SEEK_END)
        self._handle.write(b"".join(encode(row) for row in rows))
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def read(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` records from the offset, and the offset after them."""
        rows: list[dict[str, Any]] = []
        with self.path.open("rb") as reader:
            reader.seek(self.offset)
            position = self.offset
            for line in reader:
                if not line.endswith(b"\n"):
                    break  # a torn last line (crash mid-append): its batch is retried whole
                position += len(line)
                rows.append(decode(line))
                if len(rows) >= limit:
                    break
        return rows, position

    def consumed(self, offset: int) -> None:
        """Everything before ``offset`` is in the ledger."""
        if offset >= self.path.stat().st_size:
            self._handle.truncate(0)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self.offset = 0
            self._offset_path.unlink(missing_ok=True)
            return
        self.offset = offset
        tmp = self._offset_path.with_suffix(".tmp")
        with _open_private(tmp, "wb") as handle:
            handle.truncate(0)
            handle.write(str(offset).encode())
        os.replace(tmp, self._offset_path)

    def close(self, *, remove_if_empty: bool) -> None:
        empty = not self.pending
        if remove_if_empty and empty:
            self.path.unlink(missing_ok=True)
            self._offset_path.unlink(missing_ok=True)
        self._handle.close()  # releases the lock


class Spool:
    """This process's spool file plus any orphaned ones it adopted."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_mode & 0o077:
            directory.chmod(0o700)  # made by an older version, or by hand
        path = directory / f"usage-{secrets.token_hex(6)}.spool"
        staged = path.with_suffix(".new")  # not a name adopt() looks at
        handle = _open_private(staged, "a+b")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(staged, path)  # visible to other processes only once locked
        self.own = SpoolFile(path, handle)
        self.adopted: list[SpoolFile] = []
        self.adopt()

    def adopt(self) -> int:
        """Take over spool files whose process is gone; returns how many."""
        taken = 0
        for path in sorted(self.directory.glob("usage-*.spool")):
            if path == self.own.path or any(f.path == path for f in self.adopted):
                continue
            try:
                handle = _open_private(path, "a+b", create=False)
            except FileNotFoundError:
                continue  # another process adopted and removed it just now
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                spool_file = SpoolFile(path, handle)
                pending = spool_file.pending
            except (BlockingIOError, FileNotFoundError):
                handle.close()  # a live process owns it, or another adopter removed it
                continue
            if pending:
                log.warning(
                    "replaying usage records left by a stopped process", extra={"file": str(path)}
                )
                self.adopted.append(spool_file)
                taken += 1
            else:
                spool_file.close(remove_if_empty=True)
        return taken

    def files(self) -> Iterator[SpoolFile]:
        """Files with records to replay, oldest owner first (adopted, then our own)."""
        for spool_file in [*self.adopted, self.own]:
            if spool_file.pending:
                yield spool_file

    @property
    def pending(self) -> bool:
        return any(True for _ in self.files())

    def finished(self, spool_file: SpoolFile) -> None:
        if spool_file is not self.own and not spool_file.pending:
            self.adopted.remove(spool_file)
            spool_file.close(remove_if_empty=True)

    def close(self) -> None:
        for spool_file in self.adopted:
            spool_file.close(remove_if_empty=True)
        self.adopted = []
        self.own.close(remove_if_empty=True)


def _open_private(path: Path, mode: str, *, create: bool = True) -> IO[bytes]:
    """``path`` opened in ``mode`` (``a+b`` or ``wb``), created ``0600`` (unless
    ``create`` is false: then a missing file raises); an existing file that others could
    read is made ``0600`` too."""
    flags = os.O_CREAT if create else 0
    flags |= os.O_RDWR | os.O_APPEND if mode == "a+b" else os.O_WRONLY
    fd = os.open(path, flags, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def _read_offset(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(path.read_text().strip() or 0)
    return 0
