"""Building blocks for the gateway benchmark: processes, wrk, the CPU meter, the machine.

Standard library only. Every process is started in its own session so that it and all
of its children (nginx workers, uvicorn workers) can be signalled as one group, and
``Processes.stop_all`` tears all of them down, whatever happened before.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WRK_SCRIPT = HERE / "chat.lua"
CHAT_BODY = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'
)


class BenchError(RuntimeError):
    """A benchmark could not run as intended; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_layout(pin: bool) -> dict[str, list[int] | None]:
    """Which CPUs each party runs on: the system under test never shares with the load.

    2 CPUs: the system under test (SUT: a gateway, or the "direct" nginx) on the first,
    the upstream nginx and wrk on the second (both are cheap C event loops).
    3+ CPUs: SUT, upstream and wrk each get their own. 1 CPU or ``pin=False``: no pinning.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return {"sut": None, "upstream": None, "load": None}
    if len(cpus) == 2:
        return {"sut": cpus[:1], "upstream": cpus[1:], "load": cpus[1:]}
    return {"sut": cpus[:1], "upstream": cpus[1:2], "load": cpus[2:4]}


def pinned(argv: list[str], cpus: list[int] | None) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cpus)), *argv] if cpus else argv


class Processes:
    """Long-running servers, each in its own process group, all stopped by stop_all()."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cpus: list[int] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                pinned(argv, cpus),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        self.procs.append((name, proc, log_path))
        return proc

    def log_tail(self, name: str, lines: int = 30) -> str:
        for n, _, path in self.procs:
            if n == name and path.exists():
                return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, name: str, url: str, timeout: float) -> None:
        """Poll ``url`` until it answers 200; fail early if the process exits."""
        proc = next(p for n, p, _ in self.procs if n == name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(
                    f"{name} exited with {proc.returncode} before it was ready:\n"
                    + self.log_tail(name)
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise BenchError(f"{name} not ready at {url} after {timeout:.0f}s:\n" + self.log_tail(name))

    def pgids(self) -> list[int]:
        return [proc.pid for _, proc, _ in self.procs]

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc, _ in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Also catches children left behind by a parent that exited on SIGTERM.
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self.procs.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# --- load ------------------------------------------------------------------------------


def probe(base_url: str, api_key: str) -> None:
    """One request before any load: a wrong answer fails loudly instead of being timed."""
    req = urllib.request.Request(
        base_url + "/v1/chat/completions",
        data=CHAT_BODY,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{base_url}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
    data = json.loads(body)
    if not data.get("choices"):
        raise BenchError(f"{base_url}: not a chat completion: {body[:500]!r}")


def run_wrk(
    url: str,
    *,
    threads: int,
    connections: int,
    seconds: float,
    api_key: str,
    cpus: list[int] | None,
    vary: bool = False,
) -> dict[str, Any]:
    """One wrk run; wrk's own summary (chat.lua's done()) parsed, plus requests/s."""
    argv = pinned(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "5s",
            "-s",
            str(WRK_SCRIPT),
            url,
        ],
        cpus,
    )
    env = {**os.environ, "BENCH_API_KEY": api_key, "BENCH_VARY": "1" if vary else "0"}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            secs = result["duration_us"] / 1e6
            result["rps"] = result["requests"] / secs if secs else 0.0
            return result
    raise BenchError(f"wrk printed no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


class CpuMeter:
    """CPU time spent during a run by processes that are not part of the benchmark.

    Whole-machine busy time (/proc/stat) minus the CPU time of our process groups
    (the servers), of this process and of its reaped children (wrk). A busy neighbour
    (a test suite, a build) shows up here; its figures should not be trusted.
    """

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pgids: list[int]) -> None:
        self.pgids = set(pgids)
        self.t0 = time.monotonic()
        self.busy0, self.ours0 = self._busy(), self._ours()

    def foreign_cpus(self) -> float:
        """Average number of CPUs kept busy by others since this meter was made."""
        elapsed = time.monotonic() - self.t0
        foreign = (self._busy() - self.busy0) - (self._ours() - self.ours0)
        return max(0.0, foreign / elapsed) if elapsed > 0 else 0.0

    def _busy(self) -> float:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        return (sum(vals) - vals[3] - vals[4]) / self.TICK  # all but idle and iowait

    def _ours(self) -> float:
        t = os.times()
        total = t.user + t.system + t.children_user + t.children_system
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in self.pgids:  # pgrp, utime, stime: fields 5, 14, 15
                total += (int(fields[11]) + int(fields[12])) / self.TICK
        return total


# --- the machine -----------------------------------------------------------------------


def machine_info(nginx: str) -> dict[str, Any]:
    def first(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0] if text else "?"

    mem_kb = first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kb) / 1024 / 1024, 1) if mem_kb.isdigit() else "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": version(["wrk", "-v"]),
        "nginx": version([nginx, "-v"]),
    }


SCENARIOS = {"c1": (1, 1), "c32": (2, 32)}  # name: (wrk threads, connections)
QUIET_CPUS = 0.10  # other processes using more CPU than this make a run disturbed
REDOS = 10  # disturbed runs are measured again, at most twice each and this often in all


def measure_targets(
    targets: dict[str, tuple[str, str]],
    *,
    runs: int,
    seconds: dict[str, float],
    warmup_s: float,
    cpus: dict[str, Any],
    procs: Processes,
    vary: bool = False,
) -> dict[str, Any]:
    """Every run of every scenario, {scenario: {target: [wrk result, ...]}}: targets take
    turns within each run (rotated, so none always follows the same one), and a run that
    other processes disturbed is measured again."""
    raw: dict[str, Any] = {}
    redos_left = REDOS
    for scenario, (threads, conns) in SCENARIOS.items():
        load = {"threads": threads, "connections": conns, "cpus": cpus["load"], "vary": vary}
        raw[scenario] = {name: [] for name in targets}
        for url, key in targets.values():
            run_wrk(url, seconds=warmup_s, api_key=key, **load)
        for run in range(runs):
            names = list(targets)
            names = names[run % len(names) :] + names[: run % len(names)]
            for name in names:
                url, key = targets[name]
                for attempt in range(3):
                    meter = CpuMeter(procs.pgids())
                    r = run_wrk(url, seconds=seconds[scenario], api_key=key, **load)
                    r["foreign_cpus"], r["redone"] = round(meter.foreign_cpus(), 3), attempt
                    if r["foreign_cpus"] <= QUIET_CPUS or attempt == 2 or redos_left == 0:
                        break
                    redos_left -= 1
                    print(f"  {scenario:>3} run {run + 1} {name}: disturbed, once more", flush=True)
                    time.sleep(2)
                raw[scenario][name].append(r)
                lat, errors = r["latency_us"], sum(r["errors"].values())
                print(
                    f"  {scenario:>3} run {run + 1}/{runs} {name:<9} {r['rps']:9.0f} req/s"
                    f"  p50 {lat['p50'] / 1000:7.3f} ms  p99 {lat['p99'] / 1000:7.3f} ms"
                    f"  errors {errors}  others' cpu {r['foreign_cpus']:.2f}",
                    flush=True,
                )
    return raw


def medians(raw: dict[str, Any]) -> dict[str, Any]:
    """{scenario: {target: medians over the runs}}."""
    med = statistics.median
    return {
        scenario: {
            name: {
                "rps": med(r["rps"] for r in runs),
                "p50_ms": med(r["latency_us"]["p50"] for r in runs) / 1000,
                "p90_ms": med(r["latency_us"]["p90"] for r in runs) / 1000,
                "p99_ms": med(r["latency_us"]["p99"] for r in runs) / 1000,
                "errors": sum(sum(r["errors"].values()) for r in runs),
                "requests": sum(r["requests"] for r in runs),
                "foreign_cpus_max": max(r["foreign_cpus"] for r in runs),
            }
            for name, runs in per_target.items()
        }
        for scenario, per_target in raw.items()
    }
