"""Sandbox allocation on PostgreSQL: the pool statement alone, then through HTTP.

    python benchmarks/sandboxes.py [--runs 3] [--quick] [--json out.json]

PostgreSQL and redis-server on loopback (``devtools/stack.py``; ``serve --workers 2``
wants Redis), then, each run on a fresh pool of static sandboxes (one executemany):
*database*, --workers asyncio callers over --processes calling
``tollhouse.sandboxes.pool.allocate`` for a fixed time (--reask of them asking again
for a track they hold), every call timed; *http*, ``tollhouse serve --workers 2`` and
wrk (sandboxes.lua: 70 % new allocations, 10 % retries, 10 % reads, 10 % marks). The
answers are then checked against the database (no sandbox given twice or held by
another track, no track with two live ones). Targets (issue 13) and exit status 1 when
one is missed: database >= 2,000 allocations/s, p95 < 50 ms; http >= 1,000 requests/s;
zero double allocations. The code measured is this checkout's ``src/``, the server's
too. Figures: docs/benchmarks.md#sandboxes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "src"), str(HERE), str(REPO)]  # this checkout's tollhouse first
import harness as h  # noqa: E402
import servers  # noqa: E402
from devtools.stack import services  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from tollhouse.config import Settings  # noqa: E402
from tollhouse.db.engine import create_engine  # noqa: E402
from tollhouse.db.schema import upgrade  # noqa: E402
from tollhouse.errors import PoolExhausted  # noqa: E402
from tollhouse.sandboxes.models import sandboxes  # noqa: E402
from tollhouse.sandboxes.pool import Ask, allocate, new_sandbox_id  # noqa: E402

LUA = HERE / "sandboxes.lua"
ADMIN_KEY = "bench-admin-key-" + "x" * 32
TARGET_DB_RATE, TARGET_DB_P95_MS, TARGET_HTTP_RPS = 2000.0, 50.0, 1000.0
GRACE, LAB = timedelta(minutes=15), timedelta(hours=2)
REDOS = 4  # disturbed runs measured again, in all
SUMMED = ("double_allocations", "errors", "wrong_reasks", "wrong_retries", "exhausted", "redone")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, help="runs of each layer (3; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="short runs: about a minute")
    p.add_argument("--seconds", type=float, help="length of one run (10; 4 with --quick)")
    p.add_argument("--pool", type=int, default=60_000, help="sandboxes in the pool (60000)")
    p.add_argument("--workers", type=int, default=32, help="database: concurrent callers (32)")
    p.add_argument("--processes", type=int, default=2, help="database: processes they run in")
    p.add_argument("--reask", type=float, default=0.1, help="database: share of re-asks (0.1)")
    p.add_argument("--connections", type=int, default=32, help="http: wrk connections (32)")
    p.add_argument("--no-pin", action="store_true", help="do not pin wrk to a CPU")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON")
    args = p.parse_args(argv)
    args.runs = args.runs or (2 if args.quick else 3)
    args.seconds = args.seconds or (4.0 if args.quick else 10.0)
    return args


def ms(values: list[float], q: float) -> float:
    """The q-quantile of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3) if ordered else 0


class Meter(h.CpuMeter):
    """harness.CpuMeter with the Postgres server counted as ours: its backends lead
    process groups of their own, and those that exited are in the postmaster's cutime."""

    def __init__(self, pgids: list[int], postmaster: int) -> None:
        self.postmaster = str(postmaster)
        super().__init__(pgids)

    def _ours(self) -> float:
        total = super()._ours()
        for entry in os.scandir("/proc"):
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if self.postmaster in (entry.name, fields[1]):  # utime stime [cutime cstime]
                cut = 15 if entry.name == self.postmaster else 13
                total += sum(int(v) for v in fields[11:cut]) / self.TICK
        return total


# --- the database ------------------------------------------------------------------------


async def on(url: str, work: Any) -> Any:
    """``await work(engine)`` on an engine of its own, disposed of after."""
    engine = create_async_engine(url)
    try:
        return await work(engine)
    finally:
        await engine.dispose()


async def refill(engine: AsyncEngine, count: int) -> None:
    """A fresh pool: the table emptied, ``count`` static sandboxes in one executemany
    (created a millisecond apart, as if registered one by one), then VACUUM ANALYZE: the
    statistics of a pool seeded and left alone, no sandbox leased yet."""
    base = datetime.now(UTC) - timedelta(days=1)
    rows = [
        {"id": new_sandbox_id(), "name": f"bench-{n}", "backend": "static", "status": "available",
         "url": f"https://lab.invalid/{n}", "created_at": base + timedelta(milliseconds=n),
         "updated_at": base}
        for n in range(count)
    ]  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE sandboxes"))
        await conn.execute(sandboxes.insert(), rows)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE sandboxes"))


async def leases(engine: AsyncEngine) -> dict[str, tuple[str, str]]:
    """Every leased sandbox: id -> (track, status)."""
    async with engine.connect() as conn:
        query = "SELECT id, track_id, status FROM sandboxes WHERE track_id IS NOT NULL"
        return {row.id: (row.track_id, row.status) for row in await conn.execute(text(query))}


def check(answered: list[tuple[str, str]], db: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Answers (sandbox, track) against the database; double allocations must be 0."""
    ids = [sandbox for sandbox, _ in answered]
    elsewhere = sum(1 for sandbox, track in answered if db.get(sandbox, ("",))[0] != track)
    live = [track for track, status in db.values() if status == "allocated"]
    return {
        "double_allocations": len(ids) - len(set(ids)) + elsewhere + len(live) - len(set(live)),
        "given_twice": len(ids) - len(set(ids)),
        "held_by_another_track": elsewhere,
        "tracks_with_two_live": len(live) - len(set(live)),
        "leased_unanswered": len(set(db) - set(ids)),  # in flight when the load stopped
    }


async def drive(url: str, tasks: int, seconds: float, reask: float, tag: str, go: Any) -> dict:
    """One process's callers; every lease (track, sandbox, seconds) and re-ask timed."""
    settings = Settings(database_url=url, database_pool_size=tasks, database_max_overflow=0)
    engine = create_engine(settings)  # as the server makes it
    for conn in [await engine.connect() for _ in range(tasks)]:  # opened before the timing
        await conn.close()
    new: list[tuple[str, str, float]] = []
    again: list[float] = []
    out = {"wrong_reasks": 0, "exhausted": 0}
    go.wait()
    started = time.perf_counter()
    end = started + seconds

    async def caller(number: int) -> None:
        rng, mine, count = random.Random(number), [], 0
        while time.perf_counter() < end:
            if mine and rng.random() < reask:
                track, expect = rng.choice(mine)
            else:
                count += 1
                track, expect = f"{tag}-{number}-{count}", None
            t0 = time.perf_counter()
            try:
                leased = await allocate(engine, Ask(track, LAB), GRACE, datetime.now(UTC), 30)
            except PoolExhausted:
                out["exhausted"] += 1
                continue
            took = time.perf_counter() - t0
            if expect is None:
                new.append((track, leased.row.id, took))
                mine.append((track, leased.row.id))
            else:
                again.append(took)
                out["wrong_reasks"] += leased.created or leased.row.id != expect

    await asyncio.gather(*(caller(n) for n in range(tasks)))
    elapsed = time.perf_counter() - started
    await engine.dispose()
    return {**out, "new": new, "again": again, "elapsed": elapsed}


def db_process(url: str, tasks: int, seconds: float, reask: float, tag: str, go: Any, q: Any):
    try:
        q.put(asyncio.run(drive(url, tasks, seconds, reask, tag, go)))
    except BaseException as exc:  # the parent must hear of it, not wait forever
        q.put({"error": repr(exc)})


def db_run(b: Bench, run: int) -> dict[str, Any]:
    args = b.args
    asyncio.run(on(b.url, lambda e: refill(e, args.pool)))
    ctx = mp.get_context("spawn")
    go, q = ctx.Event(), ctx.Queue()
    split = [len(range(i, args.workers, args.processes)) for i in range(args.processes)]
    work = [(b.url, n, args.seconds, args.reask, f"r{run}p{i}", go, q) for i, n in enumerate(split)]
    procs = [ctx.Process(target=db_process, args=a) for a in work]
    try:
        for proc in procs:
            proc.start()
        time.sleep(0.5)  # let them connect (their pools open before the timing starts)
        meter = b.meter()
        go.set()
        results = [q.get(timeout=args.seconds + 120) for _ in procs]
        for proc in procs:
            proc.join(30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    if failed := [r["error"] for r in results if "error" in r]:
        raise h.BenchError(f"a database worker failed: {failed[0]}")
    new, again = [x for r in results for x in r["new"]], [t for r in results for t in r["again"]]
    lat = [t for _, _, t in new]
    answered = [(sandbox, track) for track, sandbox, _ in new]
    return {
        "allocations_per_s": round(sum(len(r["new"]) / r["elapsed"] for r in results), 1),
        "calls_per_s": round(sum((len(r["new"]) + len(r["again"])) / r["elapsed"]
                                 for r in results), 1),
        "p50_ms": ms(lat, 0.50), "p95_ms": ms(lat, 0.95), "p99_ms": ms(lat, 0.99),
        "reask_p50_ms": ms(again, 0.50), "reask_p95_ms": ms(again, 0.95),
        "allocations": len(new), "reasks": len(again),
        "wrong_reasks": sum(r["wrong_reasks"] for r in results),
        "exhausted": sum(r["exhausted"] for r in results),
        "foreign_cpus": round(meter.foreign_cpus(), 3),
        **check(answered, asyncio.run(on(b.url, leases))),
    }  # fmt: skip


# --- through HTTP ------------------------------------------------------------------------


def start_server(b: Bench, stack: Any) -> None:
    env = servers.tollhouse_env(dict(os.environ), b.workdir, "http://127.0.0.1:9/v1")
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(":"),
        TOLLHOUSE_DATABASE_URL=stack.database_url,
        TOLLHOUSE_REDIS_URL=stack.redis_url,
        TOLLHOUSE_ADMIN_KEY=ADMIN_KEY,
        TOLLHOUSE_SANDBOX_TRACK_REQUESTS_PER_MINUTE="0",
        TOLLHOUSE_SANDBOX_REAPER_INTERVAL_S="3600",  # nothing recycled during a run
        # Pooled connections for the requests a worker serves at once (wrk's connections
        # over the 2 workers), as a deployment sizes it (docs/deployment.md): past
        # database_pool_size, SQLAlchemy opens a connection per checkout and closes it at
        # return, which under steady load is a new Postgres connection per request.
        TOLLHOUSE_DATABASE_POOL_SIZE=str(-(-b.args.connections // 2)),
        TOLLHOUSE_SPOOL_DIR=str(b.workdir / "spool"),
    )
    port = h.free_port()
    argv = [sys.executable, "-m", "tollhouse", "serve", "--host", "127.0.0.1", "--port", str(port)]
    b.procs.start("tollhouse", [*argv, "--workers", "2"], env=env, cwd=b.workdir)
    b.web = f"http://127.0.0.1:{port}"
    b.procs.wait_ready("tollhouse", b.web + "/readyz", timeout=60)
    request = urllib.request.Request(
        b.web + "/api/broker-tokens",
        data=json.dumps({"name": "bench"}).encode(),
        headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        b.token = str(json.loads(response.read())["value"])
    time.sleep(2.5)  # the other worker learns the token (governance poll, every second)


def http_run(b: Bench, run: int | str) -> dict[str, Any]:
    asyncio.run(on(b.url, lambda e: refill(e, b.args.pool)))
    tag, secs = f"r{run}", b.args.seconds
    ids = b.workdir / f"{tag}.ids"
    argv = ["wrk", "-t2", f"-c{b.args.connections}", f"-d{secs:g}s", "--timeout", "5s"]
    argv = h.pinned([*argv, "-s", str(LUA), b.web], b.cpus)
    env = {**os.environ, "BENCH_TOKEN": b.token, "BENCH_RUN": tag, "BENCH_IDS": str(ids)}
    meter = b.meter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=secs + 60)
    foreign = round(meter.foreign_cpus(), 3)
    lines = [x for x in out.stdout.splitlines() if x.startswith("SBX_RESULT ")]
    if not lines:
        raise h.BenchError(f"wrk printed no result ({out.returncode}):\n{out.stdout}{out.stderr}")
    r = json.loads(lines[0].removeprefix("SBX_RESULT "))
    answered = [tuple(line.split()) for line in ids.read_text().splitlines()]
    secs, lat = r["duration_us"] / 1e6, r["latency_us"]
    return {
        "rps": round(r["requests"] / secs, 1), "allocations_per_s": round(r["created"] / secs, 1),
        "p50_ms": lat["p50"] / 1000, "p95_ms": lat["p95"] / 1000, "p99_ms": lat["p99"] / 1000,
        "requests": r["requests"], "status": r["status"], "sent": r["sent"],
        "created": r["created"], "distinct_ids": r["distinct"],
        "wrong_retries": r["wrong_retries"], "errors": sum(r["errors"].values()),
        "foreign_cpus": foreign,
        **check(answered, asyncio.run(on(b.url, leases))),  # type: ignore[arg-type]
    }  # fmt: skip


# --- runs and the report -----------------------------------------------------------------


class Bench:
    """What the runs share: the settings, the database, the server and its token."""

    def __init__(self, args: argparse.Namespace, workdir: Path, url: str, pid: int) -> None:
        self.args, self.workdir, self.url, self.postmaster = args, workdir, url, pid
        self.procs = h.Processes(workdir)
        self.cpus = h.cpu_layout(not args.no_pin)["load"]  # wrk's; the rest float
        self.web = self.token = ""
        self.redos = REDOS

    def meter(self) -> Meter:
        return Meter(self.procs.pgids(), self.postmaster)

    def runs(self, layer: str, once: Any) -> list[dict[str, Any]]:
        """``--runs`` runs of ``once``; one that other processes disturbed is run again
        (at most twice, and REDOS times in all)."""
        out = []
        for run in range(self.args.runs):
            for attempt in range(3):
                r = once(self, run)
                if r["foreign_cpus"] <= h.QUIET_CPUS or attempt == 2 or not self.redos:
                    break
                self.redos -= 1
                print(f"  {layer} run {run + 1}: others kept {r['foreign_cpus']:.2f} CPUs busy,"
                      " once more", flush=True)  # fmt: skip
                time.sleep(2)
            r["redone"] = attempt
            out.append(r)
            print(f"  {layer} run {run + 1}/{self.args.runs}: {line(r)}", flush=True)
        return out


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, list[dict[str, Any]]]:
    with services(workdir / "stack") as stack:
        b = Bench(args, workdir, stack.database_url, stack.pids[0])
        try:
            asyncio.run(on(b.url, upgrade))
            raw = {"database": b.runs("database", db_run)}
            start_server(b, stack)
            http_run(b, "warm")  # not counted: connections, prepared statements
            raw["http"] = b.runs("http", http_run)
        finally:
            b.procs.stop_all()
    return raw


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the figures; counts of what must not happen summed over the runs."""
    out = {k: statistics.median(r[k] for r in runs) for k, v in runs[0].items()
           if isinstance(v, int | float)}  # fmt: skip
    out.update({k: sum(r[k] for r in runs) for k in SUMMED if k in runs[0]})
    out["foreign_cpus"] = max(r["foreign_cpus"] for r in runs)
    if "status" in runs[0]:  # summed too
        codes = sorted({c for r in runs for c in r["status"]})
        out["status"] = {c: sum(r["status"].get(c, 0) for r in runs) for c in codes}
    return out


def line(r: dict[str, Any]) -> str:
    """One run's (or the medians') figures."""
    http = f"{r['rps']:,.0f} req/s, " if "rps" in r else ""
    return (
        f"{http}{r['allocations_per_s']:,.0f} allocations/s, p50 {r['p50_ms']:.2f} ms, p95 "
        f"{r['p95_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms; " + (f"status {r['status']}, " if http
        else f"re-asks p50 {r['reask_p50_ms']:.2f} ms, exhausted {r['exhausted']}; ")
        + f"others' cpu {r['foreign_cpus']:.2f}\n    double allocations: {r['double_allocations']}"
    )  # fmt: skip


def report(raw: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], bool]:
    db, web = medians(raw["database"]), medians(raw["http"])
    print(f"\ndatabase, medians of {len(raw['database'])} runs: {line(db)}")
    print(f"http, medians of {len(raw['http'])} runs: {line(web)}")
    wrong = db["double_allocations"] + web["double_allocations"]
    wrong += db["wrong_reasks"] + web["wrong_retries"] + web["errors"]
    targets = [
        (f"database: {db['allocations_per_s']:,.0f} allocations/s (>= 2,000)",
         db["allocations_per_s"] >= TARGET_DB_RATE),
        (f"database: p95 {db['p95_ms']:.2f} ms (< 50)", db["p95_ms"] < TARGET_DB_P95_MS),
        (f"http: {web['rps']:,.0f} requests/s (>= 1,000)", web["rps"] >= TARGET_HTTP_RPS),
        ("zero double allocations, wrong re-asks or retries, failed requests", wrong == 0),
    ]  # fmt: skip
    for what, ok in targets:
        print(f"target: {what}: {'PASS' if ok else 'FAIL'}")
    if max(db["foreign_cpus"], web["foreign_cpus"]) > h.QUIET_CPUS:
        print("warning: other processes were busy during a run: these figures are disturbed")
    return {"database": db, "http": web}, all(ok for _, ok in targets)


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop it all


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    servers.ensure_tools()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tollhouse-sandboxes-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # Postgres runs as its own user below it
        try:
            raw = measure(args, workdir)
        except h.BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: everything stopped", file=sys.stderr)
            return 130
    summary, passed = report(raw)
    elapsed = time.monotonic() - started
    print(f"total time {elapsed:.0f} s")
    if args.json:
        git = ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]
        doc = {
            "command": " ".join(["python", "benchmarks/sandboxes.py", *(argv or sys.argv[1:])]),
            "commit": subprocess.run(git, capture_output=True, text=True).stdout.strip(),
            "machine": h.machine_info(servers.nginx_bin()),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "summary": summary, "runs": raw, "elapsed_s": round(elapsed, 1),
        }  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
