"""The sandbox command runner (``tollhouse.sandboxes.runner``), with real processes: each
limit stops a hostile command, nothing of a run outlives it, and the command sees nothing
of the gateway — its environment, descriptors or files.

As root (CI), every test has a sandbox uid of its own, so tests on two xdist workers never
kill each other's processes, and each checks that none of its uid is left after it. The
commands are the system's (``python3`` on the sandbox's ``PATH``), not the venv's."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from tollhouse.sandboxes import runner
from tollhouse.sandboxes.runner import Limits, MiB, Outcome, prepare_workdir, run

ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not ROOT, reason="a sandbox uid of its own needs root")
PYTHON = "python3"

Sandbox = Callable[[int], Path]


def live_processes(uid: int) -> list[str]:
    """``pid state name`` of every process whose real uid is ``uid``, zombies aside (a
    killed escapee is PID 1's to reap)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        except (OSError, ValueError):
            continue  # gone meanwhile
        state = fields["State"].split()[0]
        if int(fields["Uid"].split()[0]) == uid and state not in {"Z", "X"}:
            found.append(f"{status.parent.name} {state} {fields['Name'].strip()}")
    return found


def none_left(uid: int, within_s: float = 2.0) -> list[str]:
    """The live processes of ``uid`` once they are gone or ``within_s`` passed: a process
    SIGKILLed the moment ``run`` returns may still be on its way out."""
    deadline = time.monotonic() + within_s
    while (left := live_processes(uid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory a sandbox uid can cross (pytest's ``tmp_path`` is under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="tollhouse-runner-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def sandbox(base: Path) -> Iterator[Sandbox]:
    """``sandbox(uid)``: a prepared work directory for ``uid``; afterwards, no process of
    that uid may be left."""
    uids: list[int] = []

    def make(uid: int) -> Path:
        uids.append(uid)
        path = base / f"work-{uid}"
        prepare_workdir(path, uid if ROOT else None)
        return path

    yield make
    if ROOT:
        for uid in uids:
            assert none_left(uid) == [], f"processes of sandbox uid {uid} outlived the test"


def as_uid(uid: int) -> int | None:
    return uid if ROOT else None


async def py(code: str, workdir: Path, uid: int, limits: Limits) -> Outcome:
    return await run([PYTHON, "-c", code], workdir, limits, uid=as_uid(uid))


# ----------------------------------------------------------------------------- ordinary runs


async def test_exit_code_stdout_and_stderr(sandbox: Sandbox):
    work = sandbox(200100)
    out = await run(
        ["sh", "-c", "echo hello; echo oops >&2; exit 3"], work, Limits(), uid=as_uid(200100)
    )
    assert (out.exit_code, out.signal, out.stopped_by) == (3, None, None)
    assert (out.stdout, out.stderr) == (b"hello\n", b"oops\n")
    assert 0 < out.duration_s < 5


async def test_stdin_is_passed_and_defaults_to_dev_null(sandbox: Sandbox):
    work = sandbox(200101)
    data = b"".join(b"line %d\n" % i for i in range(30_000))  # past a pipe's 64 KiB
    out = await run(["cat"], work, Limits(), uid=as_uid(200101), stdin=data)
    assert out.exit_code == 0 and out.stdout == data
    out = await run(["cat"], work, Limits(), uid=as_uid(200101))
    assert out.exit_code == 0 and out.stdout == b""
    # A command that never reads its stdin does not block the run.
    out = await run(["true"], work, Limits(), uid=as_uid(200101), stdin=data)
    assert out.exit_code == 0


async def test_cwd_is_the_workdir_and_files_land_there_private(sandbox: Sandbox):
    work = sandbox(200102)
    out = await run(
        ["sh", "-c", 'pwd; echo "$HOME $TMPDIR"; echo made > made.txt; mkdir sub'],
        work,
        Limits(),
        uid=as_uid(200102),
    )
    assert out.exit_code == 0, out.stderr
    assert out.stdout == f"{work}\n{work} {work}\n".encode()
    made = (work / "made.txt").stat()
    assert (work / "made.txt").read_text() == "made\n"
    assert stat.S_IMODE(made.st_mode) == 0o600  # umask 077
    assert stat.S_IMODE((work / "sub").stat().st_mode) == 0o700
    if ROOT:
        assert (made.st_uid, made.st_gid) == (200102, 200102)


async def test_the_environment_is_minimal(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TOLLHOUSE_SECRET_KEY", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-leak")
    work = sandbox(200103)
    out = await run(["env"], work, Limits(), uid=as_uid(200103), env={"TOOL": "grep"})
    assert out.exit_code == 0
    seen = dict(line.split("=", 1) for line in out.stdout.decode().splitlines())
    assert seen == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work),
        "LANG": "C.UTF-8",
        "TMPDIR": str(work),
        "TOOL": "grep",
    }
    assert b"hunter2" not in out.stdout and b"sk-do-not-leak" not in out.stdout


async def test_no_descriptor_of_the_gateway_is_inherited(sandbox: Sandbox, base: Path):
    work = sandbox(200104)
    kept = os.open(base, os.O_RDONLY)  # a descriptor the gateway holds open
    os.set_inheritable(kept, True)  # even one marked inheritable
    try:
        out = await run(["ls", "/proc/self/fd"], work, Limits(), uid=as_uid(200104))
    finally:
        os.close(kept)
    # 0-2 and the one ls opens to list the directory.
    assert sorted(int(fd) for fd in out.stdout.split()) == [0, 1, 2, 3]


@root_only
async def test_runs_as_the_uid_with_no_groups_and_no_new_privileges(sandbox: Sandbox):
    work = sandbox(200105)
    out = await run(["cat", "/proc/self/status"], work, Limits(), uid=200105)
    fields = dict(line.split(":", 1) for line in out.stdout.decode().splitlines())
    assert fields["Uid"].split() == ["200105"] * 4  # real, effective, saved, filesystem
    assert fields["Gid"].split() == ["200105"] * 4
    assert fields["Groups"].split() == []
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["CapEff"].strip() == "0" * 16


# ----------------------------------------------------------------------------- each limit


async def test_cpu_limit_stops_a_spin(sandbox: Sandbox):
    work = sandbox(200110)
    started = time.monotonic()
    out = await py("while True: pass", work, 200110, Limits(cpu_seconds=1, wall_seconds=20))
    assert out.stopped_by == "cpu" and out.signal == signal.SIGXCPU and out.exit_code is None
    assert time.monotonic() - started < 10  # well before the wall clock


async def test_cpu_limit_holds_for_a_command_that_ignores_sigxcpu(sandbox: Sandbox):
    work = sandbox(200111)
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass"
    out = await py(code, work, 200111, Limits(cpu_seconds=1, wall_seconds=20))
    assert out.signal == signal.SIGKILL  # at the hard limit, a second later
    assert out.stopped_by is None  # a SIGKILL it does not tell from another
    assert out.duration_s < 15


async def test_memory_limit_stops_an_allocation(sandbox: Sandbox):
    work = sandbox(200112)
    limits = Limits(memory_bytes=256 * MiB)
    out = await py("b = bytearray(1 << 30)\nprint('allocated')", work, 200112, limits)
    assert out.exit_code not in (0, None) and b"MemoryError" in out.stderr
    assert b"allocated" not in out.stdout


async def test_file_size_limit_stops_a_big_write(sandbox: Sandbox):
    work = sandbox(200113)
    limits = Limits(file_bytes=1 * MiB)
    dd = ["dd", "if=/dev/zero", "of=big", "bs=1M", "count=10"]
    out = await run(dd, work, limits, uid=as_uid(200113))
    assert out.stopped_by == "file_size" and out.signal == signal.SIGXFSZ
    assert (work / "big").stat().st_size <= 1 * MiB
    # Python ignores SIGXFSZ: its write fails with EFBIG instead, at the same size.
    code = "with open('big.py', 'wb') as f:\n    f.write(b'x' * (10 << 20))"
    out = await py(code, work, 200113, limits)
    assert out.exit_code == 1 and b"File too large" in out.stderr
    assert (work / "big.py").stat().st_size <= 1 * MiB


async def test_open_files_limit_stops_an_fd_hoarder(sandbox: Sandbox):
    work = sandbox(200114)
    code = (
        "files = []\n"
        "try:\n"
        "    for _ in range(1000):\n"
        "        files.append(open('/dev/null'))\n"
        "except OSError as e:\n"
        "    print(len(files), e.errno)\n"
    )
    out = await py(code, work, 200114, Limits(open_files=64))
    opened, error = map(int, out.stdout.split())
    assert error == errno.EMFILE and 50 < opened < 64


@root_only
async def test_processes_limit_stops_a_fork_bomb(sandbox: Sandbox):
    work = sandbox(200115)
    code = (
        "import os, time\n"
        "forks = 0\n"
        "try:\n"
        "    while forks < 1000:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        forks += 1\n"
        "except OSError as e:\n"
        "    print(forks, e.errno)\n"
    )
    out = await py(code, work, 200115, Limits(processes=16, wall_seconds=10))
    forks, error = map(int, out.stdout.split())
    assert error == errno.EAGAIN and 0 < forks < 16  # the parent is one of the 16
    assert out.duration_s < 5  # the children, asleep, were killed after the parent's end


async def test_wall_clock_kills_a_sleeper(sandbox: Sandbox):
    work = sandbox(200116)
    started = time.monotonic()
    out = await run(["sleep", "60"], work, Limits(wall_seconds=1), uid=as_uid(200116))
    elapsed = time.monotonic() - started
    assert out.stopped_by == "wall_clock" and out.signal == signal.SIGKILL
    assert 1 <= out.duration_s < 2 and elapsed < 3


async def test_output_cap_kills_a_flood(sandbox: Sandbox):
    work = sandbox(200117)
    started = time.monotonic()
    out = await run(["yes"], work, Limits(output_bytes=10_000), uid=as_uid(200117))
    assert out.stopped_by == "output" and out.signal == signal.SIGKILL
    assert len(out.stdout) == 10_000 and set(out.stdout) == set(b"y\n")
    assert time.monotonic() - started < 3


async def test_output_cap_counts_stdout_and_stderr_together(sandbox: Sandbox):
    work = sandbox(200118)
    script = "head -c 6000 /dev/zero; head -c 6000 /dev/zero >&2; sleep 60"
    out = await run(["sh", "-c", script], work, Limits(output_bytes=10_000), uid=as_uid(200118))
    assert out.stopped_by == "output"
    assert len(out.stdout) + len(out.stderr) == 10_000
    # Exactly the cap is within it.
    out = await run(
        ["head", "-c", "10000", "/dev/zero"], work, Limits(output_bytes=10_000), uid=as_uid(200118)
    )
    assert (out.stopped_by, out.exit_code, len(out.stdout)) == (None, 0, 10_000)


# ----------------------------------------------------------------------------- escapes


@root_only
@pytest.mark.parametrize(
    "escape",
    [
        "( setsid sleep 300 & ); exit 0",  # holds the output pipes
        "( setsid sleep 300 </dev/null >/dev/null 2>&1 & ); exit 0",  # holds nothing of the run
    ],
)
async def test_an_escapee_does_not_outlive_the_run(sandbox: Sandbox, escape: str):
    work = sandbox(200120)
    out = await run(["sh", "-c", escape], work, Limits(wall_seconds=10), uid=200120)
    assert (out.exit_code, out.stopped_by) == (0, None)
    assert out.duration_s < 3
    assert none_left(200120) == []


# An escapee that kills (or stops) every other process of its uid, over and over: the
# killer run after the command among them, in the moment between taking the uid and its
# own kill. Root then kills what it finds of the uid, and the next killer gets the rest.
FIGHTER = """\
import os, signal
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            try:
                os.kill(-1, signal.{sig})
            except OSError:
                pass
    os._exit(0)
"""


@root_only
@pytest.mark.parametrize(("uid", "sig"), [(200124, "SIGKILL"), (200125, "SIGSTOP")])
async def test_an_escapee_that_fights_the_killer_does_not_survive(
    sandbox: Sandbox, uid: int, sig: str
):
    work = sandbox(uid)
    started = time.monotonic()
    await py(FIGHTER.format(sig=sig), work, uid, Limits(wall_seconds=1))
    assert none_left(uid) == []
    assert time.monotonic() - started < 8


@root_only
async def test_a_leftover_of_an_earlier_run_is_killed_before_the_next(sandbox: Sandbox):
    work = sandbox(200121)
    # As if a gateway had died mid-run: a process of the uid that no run owns.
    stray = await asyncio.create_subprocess_exec(
        "sleep", "300", user=200121, group=200121, extra_groups=[], start_new_session=True
    )
    try:
        out = await run(["true"], work, Limits(), uid=200121)
        assert out.exit_code == 0
        async with asyncio.timeout(5):
            assert await stray.wait() == -signal.SIGKILL
    finally:
        if stray.returncode is None:
            stray.kill()
            await stray.wait()


@root_only
async def test_root_kills_what_it_finds_of_the_uid_when_a_killer_fails():
    """The fallback of a killer killed in its window: each process of the uid, by pidfd."""
    strays = [
        await asyncio.create_subprocess_exec(
            "sleep", "300", user=200126, group=200126, extra_groups=[], start_new_session=True
        )
        for _ in range(3)
    ]
    bystander = await asyncio.create_subprocess_exec("sleep", "300", user=200127, group=200127)
    try:
        await asyncio.to_thread(runner._kill_found, 200126)
        async with asyncio.timeout(5):
            assert [await stray.wait() for stray in strays] == [-signal.SIGKILL] * 3
        assert bystander.returncode is None and none_left(200127, 0) != []
    finally:
        for process in (*strays, bystander):
            if process.returncode is None:
                process.kill()
                await process.wait()


@root_only
async def test_a_cancelled_run_leaves_nothing(sandbox: Sandbox):
    work = sandbox(200122)
    task = asyncio.create_task(
        run(["sh", "-c", "setsid sleep 300 & sleep 300"], work, Limits(), uid=200122)
    )
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert none_left(200122) == []


@root_only
async def test_the_gateways_files_are_out_of_reach(sandbox: Sandbox, base: Path):
    work = sandbox(200123)
    secret = base / "secret.key"
    secret.write_text("the gateway's key\n")
    secret.chmod(0o600)
    private = base / "private"
    private.mkdir(mode=0o700)
    (private / "settings.toml").write_text("token = 'x'\n")
    (private / "settings.toml").chmod(0o644)  # readable, in a directory that is not
    for command in (
        f"cat {secret}",
        f"cat {private}/settings.toml",
        f"ls {private}",
        f"echo pwned >> {secret}",
        "cat /etc/shadow",
    ):
        out = await run(["sh", "-c", command], work, Limits(), uid=200123)
        assert out.exit_code != 0 and b"Permission denied" in out.stderr, command
    assert secret.read_text() == "the gateway's key\n"


# ----------------------------------------------------------------------------- arguments


def test_limits_must_be_positive():
    for field in ("cpu_seconds", "memory_bytes", "file_bytes", "open_files", "processes"):
        with pytest.raises(ValueError, match=field):
            Limits(**{field: 0})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=field):
            Limits(**{field: 1.5})  # type: ignore[arg-type]
    for wall in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="wall_seconds"):
            Limits(wall_seconds=wall)
    with pytest.raises(ValueError, match="output_bytes"):
        Limits(output_bytes=-1)


async def test_arguments_are_checked(sandbox: Sandbox, base: Path):
    work = sandbox(200130)
    uid = as_uid(200130)
    with pytest.raises(ValueError, match="non-empty"):
        await run([], work, Limits(), uid=uid)
    with pytest.raises(ValueError, match="command line"):
        await run("ls -l", work, Limits(), uid=uid)
    with pytest.raises(ValueError, match="does not exist"):
        await run(["true"], base / "missing", Limits(), uid=uid)
    with pytest.raises(FileNotFoundError):
        await run(["no-such-command-here"], work, Limits(), uid=uid)


@root_only
async def test_as_root_a_dedicated_uid_is_required(sandbox: Sandbox, base: Path):
    work = sandbox(200131)
    for uid in (None, 0, 1000, 65534, 2**32 - 1):
        with pytest.raises(ValueError, match="uid"):
            await run(["true"], work, Limits(), uid=uid)
    with pytest.raises(ValueError, match="uid"):
        prepare_workdir(base / "other", None)


def test_prepare_workdir_makes_a_private_directory_and_refuses_a_symlink(base: Path):
    uid = 200132 if ROOT else None
    work = base / "work"
    prepare_workdir(work, uid)
    prepare_workdir(work, uid)  # again: taken over as it is
    info = work.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    if ROOT:
        assert (info.st_uid, info.st_gid) == (200132, 200132)
    (base / "link").symlink_to(base)
    with pytest.raises(OSError):
        prepare_workdir(base / "link", uid)
    assert stat.S_IMODE(base.stat().st_mode) == 0o711  # untouched through the link


# ----------------------------------------------------------------------------- other loops


def test_runs_under_uvloop_the_gateways_loop(sandbox: Sandbox):
    """uvloop's subprocess API lacks ``user=``: the runner does not go through it."""
    work = sandbox(200140)

    async def both() -> tuple[Outcome, Outcome]:
        first = await run(["echo", "hi"], work, Limits(), uid=as_uid(200140), stdin=b"x")
        second = await run(["yes"], work, Limits(output_bytes=100), uid=as_uid(200140))
        return first, second

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        first, second = loop_runner.run(both())
    assert (first.exit_code, first.stdout) == (0, b"hi\n")
    assert (second.stopped_by, len(second.stdout)) == ("output", 100)


_NOT_ROOT = """\
import asyncio, importlib.util, json, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("runner", sys.argv[1])
runner = importlib.util.module_from_spec(spec)
sys.modules["runner"] = runner
spec.loader.exec_module(runner)
work = Path(sys.argv[2])

async def main():
    try:
        await runner.run(["true"], work, runner.Limits(), uid=300000)
        refused = False
    except ValueError:
        refused = True
    ok = await runner.run(["sh", "-c", "id -u"], work, runner.Limits())
    slow = await runner.run(
        ["sh", "-c", "sleep 60 & sleep 60"], work, runner.Limits(wall_seconds=0.5)
    )
    return {"refused": refused, "uid": ok.stdout.decode().strip(), "slow": slow.stopped_by}

print(json.dumps(asyncio.run(main())))
"""


@root_only
def test_not_as_root_the_command_runs_as_the_gateways_user(base: Path):
    """The weaker mode: ``uid`` refused, the command runs as the gateway's own user and
    its process group is killed at the wall clock."""
    gateway_uid = 200150
    work = base / "gateway-work"
    prepare_workdir(work, gateway_uid)  # the non-root gateway's own directory
    done = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", _NOT_ROOT, runner.__file__, str(work)],
        user=gateway_uid,
        group=gateway_uid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
        cwd=work,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "refused": True,
        "uid": str(gateway_uid),
        "slow": "wall_clock",
    }
    assert none_left(gateway_uid) == []  # the group's background sleep too
