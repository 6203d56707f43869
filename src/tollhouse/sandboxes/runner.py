"""The command runner of the sandbox broker's ``local`` backend: ``run`` starts one command
in a sandbox's work directory as a separate, unprivileged process group under resource
limits, collects its output within a bound, and leaves nothing of it running afterwards.

Isolation, and why each rule is there:

- **Own session and process group** (``start_new_session``): the command gets no signal
  meant for the gateway (a terminal's Ctrl-C), cannot take the gateway's terminal, and the
  whole group is killed in one ``killpg``. The leader is reaped only after that kill, so
  the group's id cannot be reused by an unrelated process in between.
- **Nothing inherited**: every descriptor past 0–2 is closed (``close_fds``), so no socket,
  database file or key of the gateway reaches the command; stdin is a private in-memory
  copy of ``stdin`` (``memfd``; no pipe to fill, no writer to block) or ``/dev/null``.
- **A minimal environment**: ``PATH=/usr/local/bin:/usr/bin:/bin``, ``HOME`` and
  ``TMPDIR`` the work directory, ``LANG=C.UTF-8``, plus the caller's ``env`` and nothing
  else, so no ``TOLLHOUSE_*`` setting, token or key in the gateway's environment leaks.
  The working directory is the work directory and the umask is 077: files the command
  makes are its own only.
- **A uid of its own, as root**: when the gateway runs as root, the command runs as the
  caller's per-sandbox ``uid`` (gid the same number, no supplementary groups, no passwd
  entry needed; it must be ≥ ``MIN_SANDBOX_UID`` so that no real account shares it), so
  file permissions keep it out of the gateway's files (mode 0600/0700 ones), it can signal
  or trace no process but its own, and ``RLIMIT_NPROC`` counts that sandbox's processes
  only. A run starts and ends by killing **every process of that uid**, including ones
  that left the process group with ``setsid`` or a double fork, so nothing of a run
  outlives it and no earlier run (say, of a gateway that died mid-run) shares this one's
  limits or tampers with it. Callers must not run two commands with one uid at a time.
  The process is also made ``no_new_privs``: a set-user-ID program (``su``, ``pkexec``…)
  runs without its privileges, so a bug in one (PwnKit) is no way to root.
- **How every process of the uid is killed** (``kill_uid``): a killer process is started
  with ``subprocess`` as ``sys.executable -I -S -c …`` — exec'd, so no Python runs in a
  forked copy of the threaded gateway (``os.fork`` there can deadlock on a lock another
  thread held), and no preexec_fn. It starts as root, where the sandbox can neither signal
  nor trace it, then takes the uid (real, effective and saved) and at once calls
  ``kill(-1, SIGKILL)``: the kernel signals every process of the uid in one pass under the
  lock ``fork`` needs to add a child, so no fork bomb slips a child past it. Run with
  ``user=uid`` instead, the killer would be the sandbox's to kill during the whole
  interpreter start-up. The few bytecodes between taking the uid and the kill are still
  a window: a process that kills (or stops) every other process of its uid in a loop
  hits it about one time in three, so a killer that does not exit 0 within 2 s is
  retried, after root has killed each process of the uid it finds in ``/proc`` (through
  a pidfd, so a reused pid is never signalled). A killer costs a Python start-up (~20 ms
  on an idle machine), twice a run.
- **Resource limits** (``Limits``), set in the child between the uid switch and exec
  (``preexec_fn``, which CPython calls after ``user=``: lowering a limit needs no
  privilege), soft and hard alike, so the command cannot raise them back: CPU seconds
  (``SIGXCPU`` at the limit; the hard limit is one second above, for the ``SIGKILL`` of a
  command that ignores ``SIGXCPU``), address space, file size (``SIGXFSZ``), open files,
  processes, and no core dumps. A limit above the gateway's own hard limit is lowered to
  it. The ``preexec_fn`` only calls ``setrlimit`` and ``prctl``, taking no lock, so
  running Python in the forked child of a threaded gateway cannot deadlock on one.
- **Bounded in time and output**: after ``wall_seconds`` the group (and the uid) is
  killed; stdout and stderr are read as they come and at most ``output_bytes`` of them
  are kept, in total — one byte past it and the command is killed.

The process is started with ``subprocess.Popen``, not the event loop's subprocess API:
uvloop, the gateway's loop, accepts no ``user``, ``group``, ``extra_groups`` nor
``umask``. Its pipes are read through ``loop.connect_read_pipe`` and its exit is seen on a
pidfd, which both loops support.

When the gateway does not run as root, ``uid`` must be ``None`` and the command runs as
the gateway's own user: the guarantee is weaker. Only the process group is killed, so a
process that left it with ``setsid`` survives the run; the command can read, signal and
trace whatever the gateway's user can; ``RLIMIT_NPROC`` counts all of that user's
processes, the gateway's threads included.

What the limits do not cover, even as root: the network (the command can reach loopback
services, the gateway's among them), world-readable files and the process list, disk
space (``RLIMIT_FSIZE`` bounds each file, not their number; files in ``/tmp`` or
``/dev/shm`` outlive the run), and System V IPC objects. ``RLIMIT_CPU`` and
``RLIMIT_AS`` are per process; the wall clock bounds the whole. Killed escapees are
reparented to PID 1, which must reap them (a container needs an init, e.g. ``--init``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Literal

log = logging.getLogger("tollhouse")

MiB = 1 << 20
#: The lowest sandbox uid: 0–65535 hold the accounts of a machine (system users, people,
#: ``nobody``), and every process of a sandbox uid is killed after each run.
MIN_SANDBOX_UID = 65536
MAX_SANDBOX_UID = 2**32 - 2  # (uid_t) -1 means "unchanged" to the set*id calls

StoppedBy = Literal["wall_clock", "output", "cpu", "file_size"]

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
_DRAIN_S = 1.0  # after the kill, how long the pipes get to reach their end
_REAP_S = 10.0  # a SIGKILLed process in uninterruptible sleep dies when it wakes
_KILLER_S = 2.0  # one killer's time to start and kill (~0.05 s), then it is retried
_KILLER_ATTEMPTS = 5
_PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int

# Started as root, so no process of the sandbox may signal or trace it before it is ready;
# it takes the uid (every id: real, effective and saved) and kills every process of it at
# once. kill(-1) walks the process list under the lock fork takes to add a child, so a
# fork bomb cannot slip a child past it. The window between taking the uid and the kill is
# a few bytecodes, yet a process of the uid that kills (or stops) every other one in a loop
# hits it about one time in three: see kill_uid.
_KILLER = """\
import os, sys
uid = int(sys.argv[1])
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
try:
    os.kill(-1, 9)
except ProcessLookupError:
    pass
"""


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_seconds: int = 10  # RLIMIT_CPU, per process
    memory_bytes: int = 512 * MiB  # RLIMIT_AS, per process
    file_bytes: int = 64 * MiB  # RLIMIT_FSIZE, per file written
    open_files: int = 256  # RLIMIT_NOFILE, per process
    processes: int = 64  # RLIMIT_NPROC, per uid (threads count)
    wall_seconds: float = 30.0  # the whole run; then the group (and the uid) is killed
    output_bytes: int = 1 * MiB  # stdout + stderr kept; past it the command is killed

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "wall_seconds":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"wall_seconds must be a number, not {value!r}")
                if not (math.isfinite(value) and value > 0):
                    raise ValueError(f"wall_seconds must be positive and finite, not {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{field.name} must be an integer, not {value!r}")
            elif value <= 0:
                raise ValueError(f"{field.name} must be positive, not {value}")


@dataclass(frozen=True, slots=True)
class Outcome:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stdout: bytes
    stderr: bytes
    # None (ran to its end) or the limit that stopped it, when it can be told: a command
    # that fails on its memory, file or process limit just exits, and reports it itself.
    # "output" also when the command ended by itself past the limit: its output is cut.
    stopped_by: StoppedBy | None
    duration_s: float  # from the start to the end of the command


def prepare_workdir(path: Path, uid: int | None) -> None:
    """Create the work directory ``path`` (its parent must exist), mode 0700, owned by
    ``uid``:``uid`` when given (as root), else by the gateway's user. An existing directory
    is taken over the same way; a symlink is refused (``OSError``), so a path swapped for
    one cannot have the chown land elsewhere."""
    _check_uid(uid)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o700)  # mkdir's mode went through the umask
        if uid is not None:
            os.fchown(fd, uid, uid)
    finally:
        os.close(fd)


async def run(
    argv: Sequence[str],
    workdir: Path,
    limits: Limits,
    *,
    uid: int | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
) -> Outcome:
    """Run ``argv`` in ``workdir`` under ``limits`` (the module's docstring says how).

    ``uid`` is the sandbox's uid, required when the gateway runs as root and refused
    otherwise. Raises ``ValueError`` for a bad argument and ``OSError`` when the command
    cannot be started (not found, not executable, too big for its memory limit)."""
    workdir, environment = _checked(argv, workdir, limits, uid, env)
    if uid is not None:
        await kill_uid(uid)  # whatever an earlier run left behind
    proc = _start(argv, workdir, environment, limits, uid, stdin)
    started = time.monotonic()
    try:
        job = _Run(proc, uid, limits.output_bytes)
    except BaseException:  # no pidfd: kill it blind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    try:
        stopped_by = await job.watch(limits.wall_seconds)
    finally:
        # Shielded: a second cancellation must not skip the kill of the uid.
        await asyncio.shield(asyncio.ensure_future(job.end()))
    code = proc.returncode
    if stopped_by is None and job.output.over:
        stopped_by = "output"
    if stopped_by is None and code == -signal.SIGXCPU:
        stopped_by = "cpu"
    if stopped_by is None and code == -signal.SIGXFSZ:
        stopped_by = "file_size"
    return Outcome(
        exit_code=code if code is not None and code >= 0 else None,
        signal=-code if code is not None and code < 0 else None,
        stdout=bytes(job.output.stdout),
        stderr=bytes(job.output.stderr),
        stopped_by=stopped_by,
        duration_s=(job.ended or time.monotonic()) - started,
    )


def _checked(
    argv: Sequence[str],
    workdir: Path,
    limits: Limits,
    uid: int | None,
    env: Mapping[str, str] | None,
) -> tuple[Path, dict[str, str]]:
    """The arguments of ``run`` checked: the work directory made absolute, and the
    command's environment."""
    if isinstance(argv, str | bytes) or not argv:
        raise ValueError("argv must be a non-empty list of arguments, not a command line")
    if not all(isinstance(arg, str) for arg in argv):
        raise ValueError("every argument in argv must be a string")
    if not isinstance(limits, Limits):
        raise ValueError(f"limits must be a Limits, not {limits!r}")
    _check_uid(uid)
    workdir = Path(workdir).absolute()
    if not workdir.is_dir():
        raise ValueError(f"the work directory {workdir} does not exist or is not a directory")
    environment = {
        "PATH": BASE_PATH,
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "TMPDIR": str(workdir),
        **(env or {}),
    }
    return workdir, environment


def _start(
    argv: Sequence[str],
    workdir: Path,
    environment: dict[str, str],
    limits: Limits,
    uid: int | None,
    stdin: bytes | None,
) -> subprocess.Popen[bytes]:
    """Fork and exec the command (blocking for that long only, as the loop's own
    subprocess API does)."""
    stdin_fd = _memfd(stdin) if stdin is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(argv),
            stdin=stdin_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=environment,
            close_fds=True,
            start_new_session=True,
            umask=0o077,
            user=uid,
            group=uid,
            extra_groups=[] if uid is not None else None,
            preexec_fn=_limiter(limits),
        )
    finally:
        if stdin is not None:
            os.close(stdin_fd)


def _check_uid(uid: int | None) -> None:
    if os.geteuid() != 0:
        if uid is not None:
            raise ValueError("a sandbox uid needs a gateway running as root; give uid=None")
        return
    if uid is None:
        raise ValueError(
            "the gateway runs as root: give the sandbox's uid, a command never runs as root"
        )
    if isinstance(uid, bool) or not isinstance(uid, int):
        raise ValueError(f"uid must be an integer, not {uid!r}")
    if not MIN_SANDBOX_UID <= uid <= MAX_SANDBOX_UID:
        raise ValueError(
            f"the sandbox uid {uid} is outside {MIN_SANDBOX_UID}..{MAX_SANDBOX_UID}: "
            "every process of it is killed after a run, so it must be no account's"
        )


def _limiter(limits: Limits) -> Callable[[], None]:
    """The ``preexec_fn``: every value is worked out here, in the parent, so that the child
    only makes system calls."""
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        (resource.RLIMIT_NPROC, limits.processes, limits.processes),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    settings: list[tuple[int, tuple[int, int]]] = []
    for which, soft, hard in wanted:
        ceiling = resource.getrlimit(which)[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        settings.append((which, (soft, hard)))

    def limit() -> None:
        for which, pair in settings:
            resource.setrlimit(which, pair)
        if _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")

    return limit


def _memfd(data: bytes) -> int:
    """An in-memory file holding ``data``, read from its start: the command's stdin."""
    fd = os.memfd_create("tollhouse-stdin", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Output:
    """stdout and stderr, at most ``cap`` bytes of them in total; ``full`` is set at the
    first byte past it (the rest is read and dropped)."""

    def __init__(self, cap: int, full: asyncio.Future[None]) -> None:
        self.cap, self.kept, self.over = cap, 0, False
        self.stdout, self.stderr = bytearray(), bytearray()
        self.full = full

    def add(self, into: bytearray, data: bytes) -> None:
        room = self.cap - self.kept
        if len(data) > room:
            data = data[:room]
            self.over = True
            if not self.full.done():
                self.full.set_result(None)
        into += data
        self.kept += len(data)


class _Reader(asyncio.Protocol):
    def __init__(self, output: _Output, into: bytearray, closed: asyncio.Future[None]) -> None:
        self.output, self.into, self.closed = output, into, closed

    def data_received(self, data: bytes) -> None:
        self.output.add(self.into, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Run:
    """One started command: ``watch`` waits for its end, its output cap or the wall clock;
    ``end`` kills what is left, reaps the leader and closes everything."""

    def __init__(self, proc: subprocess.Popen[bytes], uid: int | None, cap: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.proc, self.uid = proc, uid
        self.pidfd = os.pidfd_open(proc.pid)
        self.exited = _exit_of(self.pidfd)
        self.exited.add_done_callback(self._exit_seen)
        self.output = _Output(cap, self.loop.create_future())
        # A pipe is the transport's to close once handed to it (uvloop closes the fd
        # itself: closing the file object too could close a reused descriptor).
        self.pipes = [p for p in (proc.stdout, proc.stderr) if p is not None]
        self.closed: list[asyncio.Future[None]] = []
        self.transports: list[asyncio.BaseTransport] = []
        self.ended: float | None = None

    def _exit_seen(self, exited: asyncio.Future[None]) -> None:
        if not exited.cancelled():
            self.ended = time.monotonic()

    async def watch(self, wall_s: float) -> StoppedBy | None:
        deadline = self.loop.time() + wall_s
        for into in (self.output.stdout, self.output.stderr):
            closed: asyncio.Future[None] = self.loop.create_future()
            reader = _Reader(self.output, into, closed)
            transport, _ = await self.loop.connect_read_pipe(partial(_same, reader), self.pipes[0])
            self.pipes.pop(0)
            self.closed.append(closed)
            self.transports.append(transport)
        done, _ = await asyncio.wait(
            {self.exited, self.output.full},
            timeout=max(0.0, deadline - self.loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self.output.full in done:
            return "output"
        return None if self.exited in done else "wall_clock"

    async def end(self) -> None:
        try:
            # The leader is not reaped yet (a zombie at worst), so its group id is still
            # its own: the kill cannot reach another process group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            if self.uid is not None:
                await kill_uid(self.uid)
            await asyncio.wait({self.exited}, timeout=_REAP_S)
            if self.exited.done():
                self.proc.wait()
            else:
                log.warning("sandbox command %d alive %.0f s after SIGKILL", self.proc.pid, _REAP_S)
            # The pipes end when the last process holding them is dead: at once as root;
            # a process that left the group of a non-root run may hold them for ever.
            if self.closed:
                await asyncio.wait(self.closed, timeout=_DRAIN_S)
        finally:
            for transport in self.transports:
                transport.close()
            for pipe in self.pipes:
                pipe.close()
            if self.closed:  # connection_lost comes a loop turn after close()
                await asyncio.wait(self.closed, timeout=_DRAIN_S)
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.exited.cancel()
            self.output.full.cancel()


def _same(reader: _Reader) -> _Reader:
    return reader


def _exit_of(pidfd: int) -> asyncio.Future[None]:
    """Done when the process of ``pidfd`` has exited (it is left for ``wait`` to reap)."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        loop.remove_reader(pidfd)
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    return exited


async def kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid``: a killer does it at once (``_KILLER``); when a
    process of the uid kills or stops the killer before it is done, root kills the
    processes of the uid it finds (``_kill_found``), and a new killer makes sure."""
    for _ in range(_KILLER_ATTEMPTS):
        if await _killer(uid):
            return
        await asyncio.to_thread(_kill_found, uid)
    log.error("could not kill the processes of sandbox uid %d in %d tries", uid, _KILLER_ATTEMPTS)


async def _killer(uid: int) -> bool:
    """Run one killer; True when it did its work."""
    killer = subprocess.Popen(  # noqa: ASYNC220 (waited on through a pidfd)
        [sys.executable, "-I", "-S", "-c", _KILLER, str(uid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        env={},
        close_fds=True,
        start_new_session=True,
    )
    pidfd = os.pidfd_open(killer.pid)
    exited = _exit_of(pidfd)
    try:
        await asyncio.wait({exited}, timeout=_KILLER_S)
        if not exited.done():  # stopped in its window, or a start that stalled
            killer.kill()
            await asyncio.wait({exited}, timeout=_REAP_S)
        # Not reaped when still alive: Popen reaps it later (subprocess._active).
        return exited.done() and killer.wait() == 0
    finally:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        exited.cancel()


def _kill_found(uid: int) -> None:
    """SIGKILL, as root, each process whose real uid is ``uid``. One by one, so a process
    forked meanwhile is missed (the next killer gets it); each through a pidfd opened
    before its uid is read again, so a pid reused meanwhile is never signalled."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or _real_uid(entry.name) != uid:
            continue
        try:
            pidfd = os.pidfd_open(int(entry.name))
        except OSError:
            continue  # gone
        try:
            if _real_uid(entry.name) == uid:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(pidfd)


def _real_uid(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass  # gone
    return None
