"""Scaled out against embedded: governance on Postgres + Redis, 1 and 2 workers.

    python benchmarks/replicas.py [--runs 3] [--quick] [--json out.json]

Starts, on loopback only: nginx as the upstream (a canned chat completion), PostgreSQL
and redis-server (``devtools/stack.py``), and three Tollhouse targets, each sent every
request with a virtual key whose key, team and customer carry budgets and rate limits:

  embedded   one worker, SQLite, counters in memory
  shared-1   one worker, Postgres + Redis: each admission is a Redis function call
  shared-2   ``serve --workers 2`` on Postgres + Redis: two processes, one socket

Scenarios as in gateway.py: c1 (p50; added = target - embedded) and c32 (requests/s).
Target: Redis-backed admission adds at most 1 ms p50 over embedded at c1. Bounded in
time (about 3 minutes; 1 with --quick) and torn down at the end. Figures:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # devtools/
import harness as h
import servers
from devtools.stack import services

SCENARIOS = h.SCENARIOS
TARGET_ADDED_P50_MS = 1.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, help="runs per scenario and target (3; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="short runs: about a minute")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON")
    args = p.parse_args(argv)
    args.runs = args.runs or (2 if args.quick else 3)
    args.seconds = 2.0 if args.quick else 5.0
    return args


def start_targets(procs: h.Processes, workdir: Path, stack: Any, cpus: dict[str, Any]) -> dict:
    port = h.free_port()
    conf = servers.nginx_config(workdir, "upstream", port)
    procs.start(
        "nginx", [servers.nginx_bin(), "-p", str(workdir), "-c", str(conf)], cpus=cpus["upstream"]
    )
    procs.wait_ready("nginx", f"http://127.0.0.1:{port}/healthz", timeout=10)
    exe = servers.tollhouse_bin()
    if exe is None:
        raise h.BenchError("tollhouse not found: pip install -e . first")
    targets = {}
    layouts = {
        "embedded": ({}, 1),
        "shared-1": (
            {"TOLLHOUSE_DATABASE_URL": stack.database_url, "TOLLHOUSE_REDIS_URL": stack.redis_url},
            1,
        ),
        "shared-2": (
            {"TOLLHOUSE_DATABASE_URL": stack.database_url, "TOLLHOUSE_REDIS_URL": stack.redis_url},
            2,
        ),
    }
    for name, (extra, workers) in layouts.items():
        env = servers.tollhouse_env(dict(os.environ), workdir / name, f"http://127.0.0.1:{port}/v1")
        (workdir / name).mkdir(exist_ok=True)
        env.update(extra, TOLLHOUSE_SPOOL_DIR=str(workdir / name / "spool"))
        tport = h.free_port()
        argv = [
            exe,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(tport),
            "--workers",
            str(workers),
        ]
        # Two workers get both CPUs: that is what a second worker is for.
        procs.start(
            name, argv, env=env, cpus=cpus["sut"] if workers == 1 else None, cwd=workdir / name
        )
        url = f"http://127.0.0.1:{tport}"
        procs.wait_ready(name, url + "/readyz", timeout=60)
        key = servers.create_governed_key(url)
        targets[name] = (url, key)
    # A worker learns a key another worker created by polling (every second).
    time.sleep(2.5)
    for url, key in targets.values():
        for _ in range(40):
            h.probe(url, key)
    return targets


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = h.medians(raw)
    c1 = out["c1"]
    out["added_p50_ms"] = {
        name: round(c1[name]["p50_ms"] - c1["embedded"]["p50_ms"], 3) for name in c1
    }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers.ensure_tools()
    cpus = h.cpu_layout(True)
    with tempfile.TemporaryDirectory(prefix="tollhouse-replicas-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # Postgres runs as its own user below it
        procs = h.Processes(workdir)
        with services(workdir / "stack") as stack:
            if cpus["upstream"]:
                # Postgres and Redis share the upstream's CPU: the one under test stays
                # the gateway's alone, as in gateway.py. Postgres backends inherit this.
                for pid in stack.pids:
                    cpu_list = ",".join(map(str, cpus["upstream"]))
                    subprocess.run(
                        ["taskset", "-a", "-p", "-c", cpu_list, str(pid)],
                        check=True,
                        capture_output=True,
                    )
            try:
                targets = start_targets(procs, workdir, stack, cpus)
                raw = h.measure_targets(
                    targets, runs=args.runs, seconds={"c1": args.seconds, "c32": args.seconds},
                    warmup_s=1.0, cpus=cpus, procs=procs,
                )  # fmt: skip
            finally:
                procs.stop_all()
    summary = summarize(raw)
    print()
    for scenario in SCENARIOS:
        print(f"{scenario}:")
        for name, fig in summary[scenario].items():
            print(
                f"  {name:<9} {fig['rps']:8.0f} req/s  p50 {fig['p50_ms']:7.3f} ms"
                f"  p99 {fig['p99_ms']:7.3f} ms  errors {fig['errors']}"
            )
    added = summary["added_p50_ms"]["shared-1"]
    verdict = "PASS" if added <= TARGET_ADDED_P50_MS else "FAIL"
    print(f"target: Redis-backed admission adds {added:.3f} ms p50 at c1 (<= 1.0): {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": raw}, indent=2))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
