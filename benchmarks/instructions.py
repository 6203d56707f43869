#!/usr/bin/env python3
"""CPU instructions a Tollhouse spends per request, counted by valgrind's callgrind.

    python benchmarks/instructions.py [--requests 400] [--baseline EXE] [--credits]
                                      [--json out.json]

Wall-clock figures (``gateway.py``) on a shared 2-core machine move by ±10 % between
runs; an instruction count does not: the same build serving the same requests counts
the same instructions to within a fraction of a percent. So a before/after question
("does this change make the hot path dearer?") is answered here, and ``gateway.py``
says how fast the result is.

For each build (this checkout's ``tollhouse``, and ``--baseline``'s when given), with
governance off (anonymous) and on (a key under a team under a customer, each with a
budget and rate limits) — and with ``--credits``, governed with the customer's prepaid
account paying too — on loopback only:

1. start ``tollhouse serve`` under callgrind with instrumentation off (start-up is not
   counted, and runs at near native speed), behind nginx answering a canned completion;
2. warm up with ``--warmup`` requests, switch instrumentation on, send 50 more (the
   instrumented code paths settle), zero the counters;
3. send ``--requests`` chat completions one after another on one keep-alive connection,
   dump the counters, and divide.

Work paced by the clock rather than by requests is pinned (usage records are written in
batches of 50; the governance and alert polls wait an hour), so the count is the same
whether callgrind runs fast or slow.

The count covers every thread of the server (the event loop, the SQLite writer), so
background work a request causes (its usage record) is in it. Bounded: each build and
mode takes about a minute; everything is torn down at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness as h
import servers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add(
        "--requests",
        type=int,
        default=400,
        help="requests counted per build and mode (400); a multiple of 50",
    )
    add(
        "--warmup",
        type=int,
        default=200,
        help="requests before counting starts (200); a multiple of 50",
    )
    add("--tollhouse", metavar="EXE", help="default: <repo>/.venv/bin/tollhouse, else PATH")
    add("--baseline", metavar="EXE", help="a second Tollhouse, counted the same way")
    add("--runs", type=int, default=3, help="runs per build and mode; medians (3)")
    add("--json", metavar="PATH", help="also write the figures as JSON")
    add("--credits", action="store_true", help="also count governed with a prepaid account")
    add("--only-credits", action="store_true", help="count governed and prepaid only")
    args = parser.parse_args(argv)
    whole = not (args.requests % 50 or args.warmup % 50)
    if not (whole and 50 <= args.requests <= 5000 and 0 <= args.warmup <= 5000):
        parser.error("--requests must be a multiple of 50 up to 5000, --warmup too")
    if not 1 <= args.runs <= 9:
        parser.error("--runs must be 1..9")
    return args


def send(port: int, key: str, count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    try:
        for _ in range(count):
            conn.request("POST", "/v1/chat/completions", h.CHAT_BODY, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise h.BenchError(f"request answered {response.status}")
    finally:
        conn.close()


def control(pid: int, *flags: str) -> None:
    subprocess.run(["callgrind_control", *flags, str(pid)], check=True, capture_output=True)


def total(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise h.BenchError(f"no totals in {dump}")


# mode: the key a request carries ("anon": none, "gov": governed, "credits": prepaid too)
MODES = {"governance off": "anon", "governance on": "gov", "credits": "credits"}


def count(exe: str, workdir: Path, upstream: str, key_of: str, args: argparse.Namespace) -> float:
    """Instructions per request of ``exe`` with the key ``key_of`` names (``MODES``)."""
    workdir.mkdir(parents=True)
    procs = h.Processes(workdir)
    port = h.free_port()
    out = workdir / "callgrind.out"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes"]
    argv += [f"--callgrind-out-file={out}.%p", exe, "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", "1"]
    env = servers.tollhouse_env(dict(os.environ), workdir, upstream)
    env.update(
        PYTHONHASHSEED="0",  # the same dict layouts, run after run
        # Work paced by the clock, not by requests, would be counted in proportion to
        # how slowly the server runs under callgrind: usage records are written in
        # batches of exactly 50 instead, and the background polls are kept out.
        TOLLHOUSE_LEDGER_BATCH_SIZE="50",
        TOLLHOUSE_LEDGER_FLUSH_INTERVAL_MS="3600000",
        TOLLHOUSE_GOVERNANCE_POLL_INTERVAL_S="3600",
        TOLLHOUSE_ALERT_POLL_INTERVAL_S="3600",
        TOLLHOUSE_CREDITS_SWEEP_INTERVAL_S="3600",
        TOLLHOUSE_CREDITS_WATCH_GAP_S="3600",
    )
    try:
        proc = procs.start("tollhouse", argv, env=env, cwd=workdir)
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready("tollhouse", url + "/readyz", timeout=300)
        if key_of == "anon":
            key = "sk-bench"
        else:
            key = servers.create_governed_key(url, prepaid=key_of == "credits")
        send(port, key, args.warmup)
        control(proc.pid, "--instr=on")
        send(port, key, 50)  # whole batches before and after the zero
        control(proc.pid, "--zero")
        send(port, key, args.requests)
        control(proc.pid, "--dump")
        dumps = sorted(workdir.glob("callgrind.out.*.*"))  # <pid>.<dump number>
        if not dumps:
            raise h.BenchError("callgrind wrote no dump:\n" + procs.log_tail("tollhouse"))
        return total(dumps[-1]) / args.requests
    finally:
        procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise h.BenchError(f"{tool} not found: apt-get install -y valgrind")
    builds = {"tollhouse": args.tollhouse or servers.tollhouse_bin()}
    if args.baseline:
        builds["baseline"] = args.baseline
    if builds["tollhouse"] is None:
        raise h.BenchError("tollhouse not found: install the repo or pass --tollhouse")
    servers.ensure_tools()
    runs: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="tollhouse-instr-") as tmp:
        workdir = Path(tmp)
        procs = h.Processes(workdir)
        try:
            port = h.free_port()
            conf = servers.nginx_config(workdir, "upstream", port)
            procs.start("nginx", [servers.nginx_bin(), "-p", str(workdir), "-c", str(conf)])
            procs.wait_ready("nginx", f"http://127.0.0.1:{port}/healthz", timeout=10)
            upstream = f"http://127.0.0.1:{port}/v1"
            # Builds take turns within every run, as in gateway.py.
            modes = dict(MODES)
            if args.only_credits:
                del modes["governance off"]
            elif not args.credits:
                del modes["credits"]
            for run in range(args.runs):
                for mode, key_of in modes.items():
                    for name, exe in builds.items():
                        started = time.monotonic()
                        where = workdir / f"{name}-{key_of}-{run}"
                        per = count(str(exe), where, upstream, key_of, args)
                        runs.setdefault(mode, {}).setdefault(name, []).append(per)
                        took = time.monotonic() - started
                        print(f"run {run + 1} {mode:15} {name:10} {per:>12,.0f} instructions"
                              f"/request  ({took:.0f} s)", flush=True)  # fmt: skip
        finally:
            procs.stop_all()
    figures = {
        mode: {name: statistics.median(values) for name, values in by_build.items()}
        for mode, by_build in runs.items()
    }
    report(figures)
    if args.json:
        raw = {"medians": figures, "runs": runs, "requests": args.requests}
        Path(args.json).write_text(json.dumps(raw, indent=2) + "\n")
    return 0


def report(figures: dict[str, dict[str, Any]]) -> None:
    for mode, by_build in figures.items():
        for name, per in by_build.items():
            print(f"median {mode:15} {name:10} {per:>12,.0f} instructions/request")
    if "credits" in figures and "governance on" in figures:
        for name in figures["credits"]:
            added = figures["credits"][name] / figures["governance on"][name] - 1
            print(f"{name}: a prepaid account adds {added:+.2%} instructions per request")
    for mode, by_build in figures.items():
        if "baseline" in by_build:
            change = by_build["tollhouse"] / by_build["baseline"] - 1
            print(f"{mode}: {change:+.2%} instructions per request against the baseline")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        try:
            sys.exit(main())
        except h.BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
