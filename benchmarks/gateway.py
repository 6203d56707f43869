"""Gateway overhead: Tollhouse and LiteLLM in front of an upstream that costs nothing.

    python benchmarks/gateway.py [--runs 5] [--quick] [--json out.json] [--skip-litellm]

Starts, on loopback only: nginx answering every chat completion with a canned JSON
(the "direct" target), Tollhouse and LiteLLM's proxy (one worker each) in front of it.
Then wrk POSTs a small chat completion to each, in two scenarios, each repeated
--runs times after a warm-up, the targets taking turns within every run:

  c1   wrk -t1 -c1:  p50 latency; added latency = median p50(through) - median p50(direct)
  c32  wrk -t2 -c32: requests/s; Tollhouse / LiteLLM ratio

Figures are medians over the runs. Everything is bounded in time (about 5 minutes by
default, about 1 minute with --quick) and torn down at the end, even on error or
Ctrl-C. Method and figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h
import policy_set
import servers

SCENARIOS = h.SCENARIOS
TARGET_ADDED_P50_MS = 0.6  # Tollhouse adds at most this much p50 latency at c1
TARGET_RPS_RATIO = 10.0  # and serves at least this many times LiteLLM's requests/s at c32
TARGET_GOV_ADDED_P50_MS = 0.8  # with governance on (key + team + customer), added p50 at c1
TARGET_GOV_COST = 0.15  # and governance on costs at most this share of c32 throughput
TARGET_CREDITS_ADDED_P50_MS = 0.05  # a prepaid account adds at most this to governed p50
TARGET_CREDITS_COST = 0.05  # and costs at most this share of governed c32 throughput
TARGET_POLICIES_ADDED_P50_MS = 0.05  # ten attached CEL policies add at most this to it
QUIET_CPUS = h.QUIET_CPUS

Targets = dict[str, tuple[str, str]]  # name: (base URL, bearer key)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--runs", type=int, help="measured runs per scenario and target (5; 3 with --quick)")
    add("--quick", action="store_true", help="short runs: about a minute in all")
    add("--json", type=Path, metavar="PATH", help="also write every figure as JSON")
    add("--skip-litellm", action="store_true", help="do not measure the reference")
    add("--skip-tollhouse", action="store_true", help="measure only direct and LiteLLM")
    add("--skip-governance", action="store_true", help="do not measure governance on")
    add(
        "--credits",
        action="store_true",
        help="also measure governance with a prepaid account paying (tollhouse-credits)",
    )
    add(
        "--policies",
        action="store_true",
        help="also measure governance with ten CEL policies applying (tollhouse-policies)",
    )
    add(
        "--vary",
        action="store_true",
        help="every request asks another max_tokens (to every target): nothing remembered "
        "by the request's values is reused, so --policies measures cold decisions",
    )
    add("--tollhouse", metavar="EXE", help="default: <repo>/.venv/bin/tollhouse, else PATH")
    add(
        "--baseline",
        metavar="EXE",
        help="a second Tollhouse (another checkout's) measured in the same runs, taking "
        "turns with the first: before/after figures free of the machine's drift",
    )
    add("--api-key", default="sk-bench", help="bearer key for Tollhouse (default sk-bench)")
    add("--no-pin", action="store_true", help="do not pin processes to CPUs with taskset")
    add("--c1-seconds", type=float, help="length of one c1 run (5; 2 with --quick)")
    add("--c32-seconds", type=float, help="length of one c32 run (10; 3 with --quick)")
    add("--warmup-seconds", type=float, help="warm-up per target and scenario (3; 1 --quick)")
    args = p.parse_args(argv)
    q = args.quick
    args.runs = args.runs or (3 if q else 5)
    args.c1_seconds = args.c1_seconds or (2.0 if q else 5.0)
    args.c32_seconds = args.c32_seconds or (3.0 if q else 10.0)
    args.warmup_seconds = args.warmup_seconds or (1.0 if q else 3.0)
    if not 1 <= args.runs <= 50:
        p.error("--runs must be between 1 and 50")
    if max(args.c1_seconds, args.c32_seconds, args.warmup_seconds) > 120:
        p.error("one wrk run lasts at most 120 s")
    return args


def start_servers(
    args: argparse.Namespace, procs: h.Processes, workdir: Path, cpus: dict[str, Any]
) -> Targets:
    """Start nginx, Tollhouse and LiteLLM and probe each with one request.

    Two identical nginx: "upstream", behind the gateways, shares a CPU with wrk;
    "direct" sits on the gateways' CPU so that the baseline crosses CPUs exactly as
    the client's leg to a gateway does.
    """
    urls = {}
    for name in ("upstream", "direct"):
        port = h.free_port()
        conf = servers.nginx_config(workdir, name, port)
        cpu = cpus["upstream"] if name == "upstream" else cpus["sut"]
        procs.start(
            f"nginx-{name}", [servers.nginx_bin(), "-p", str(workdir), "-c", str(conf)], cpus=cpu
        )
        urls[name] = f"http://127.0.0.1:{port}"
        procs.wait_ready(f"nginx-{name}", urls[name] + "/healthz", timeout=10)
    upstream = urls["upstream"] + "/v1"
    targets = {"direct": (urls["direct"], args.api_key)}
    loopback = "127.0.0.1,localhost"
    base_env = {**os.environ, "NO_PROXY": loopback, "no_proxy": loopback}

    if not args.skip_tollhouse:
        exe = args.tollhouse or servers.tollhouse_bin()
        if exe is None:
            raise h.BenchError("tollhouse not found: install the repo or pass --skip-tollhouse")
        port = h.free_port()
        argv = [exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        env = servers.tollhouse_env(base_env, workdir, upstream)
        procs.start("tollhouse", argv, env=env, cpus=cpus["sut"], cwd=workdir)
        targets["tollhouse"] = (f"http://127.0.0.1:{port}", args.api_key)
        procs.wait_ready("tollhouse", targets["tollhouse"][0] + "/readyz", timeout=60)
        if not args.skip_governance:
            # Same server, same run: with a virtual key, every request is admitted through
            # the key's, team's and customer's budgets and rate limits; without, it is not.
            governed_key = servers.create_governed_key(targets["tollhouse"][0])
            targets["tollhouse-gov"] = (targets["tollhouse"][0], governed_key)
            if args.credits:
                # The same chain of limits, and the customer's prepaid account pays too.
                prepaid = servers.create_governed_key(targets["tollhouse"][0], prepaid=True)
                targets["tollhouse-credits"] = (targets["tollhouse"][0], prepaid)
            if args.policies:
                # The same chain of limits, and ten CEL policies apply to the key (by a
                # tag only it carries: the other targets have no policy to evaluate).
                url = targets["tollhouse"][0]
                for body in policy_set.bodies():
                    servers.admin_post(url, "policies", body)
                tagged = servers.create_governed_key(url, tags=[policy_set.TAG])
                targets["tollhouse-policies"] = (url, tagged)
        if args.baseline:
            env = servers.tollhouse_env(base_env, workdir / "baseline", upstream)
            start_tollhouse(args, procs, workdir, cpus, targets, "baseline", args.baseline, env)

    if not args.skip_litellm:
        exe = str(servers.ensure_litellm())
        port = h.free_port()
        master_key = "sk-bench-" + secrets.token_hex(16)  # it refuses to start without one
        cfg = servers.litellm_config(workdir, upstream, master_key)
        argv = [exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--num_workers", "1"]
        env = servers.litellm_env(base_env)
        procs.start("litellm", argv, env=env, cpus=cpus["sut"], cwd=workdir)
        targets["litellm"] = (f"http://127.0.0.1:{port}", master_key)
        procs.wait_ready("litellm", targets["litellm"][0] + "/health/liveliness", timeout=180)

    for url, key in targets.values():
        h.probe(url, key)
    return targets


def start_tollhouse(
    args: argparse.Namespace,
    procs: h.Processes,
    workdir: Path,
    cpus: dict[str, Any],
    targets: Targets,
    name: str,
    exe: str,
    env: dict[str, str],
) -> None:
    """One more Tollhouse as targets ``name`` (and ``name-gov``), in its own directory."""
    (workdir / name).mkdir(exist_ok=True)
    port = h.free_port()
    argv = [exe, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    procs.start(name, argv, env=env, cpus=cpus["sut"], cwd=workdir / name)
    url = f"http://127.0.0.1:{port}"
    targets[name] = (url, args.api_key)
    procs.wait_ready(name, url + "/readyz", timeout=60)
    if not args.skip_governance:
        targets[f"{name}-gov"] = (url, servers.create_governed_key(url))


def measure(
    args: argparse.Namespace, targets: Targets, cpus: dict[str, Any], procs: h.Processes
) -> dict[str, Any]:
    """Every run of every scenario: {scenario: {target: [wrk result, ...]}}."""
    seconds = {"c1": args.c1_seconds, "c32": args.c32_seconds}
    return h.measure_targets(
        targets, runs=args.runs, seconds=seconds, warmup_s=args.warmup_seconds,
        cpus=cpus, procs=procs, vary=args.vary,
    )  # fmt: skip


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians over the runs, the added latency and the throughput ratio."""
    out: dict[str, Any] = h.medians(raw)
    c1, c32 = out["c1"], out["c32"]
    derived: dict[str, Any] = {}
    names = (
        "tollhouse",
        "tollhouse-gov",
        "tollhouse-credits",
        "tollhouse-policies",
        "baseline",
        "baseline-gov",
    )
    for name in (*names, "litellm"):
        if name in c1:
            added = c1[name]["p50_ms"] - c1["direct"]["p50_ms"]
            derived[f"{name}_added_p50_ms"] = round(added, 3)  # wrk's resolution is 1 µs
    if "tollhouse" in c32 and "litellm" in c32:
        derived["rps_ratio_tollhouse_to_litellm"] = c32["tollhouse"]["rps"] / c32["litellm"]["rps"]
    if "tollhouse" in c32 and "tollhouse-gov" in c32:
        kept = c32["tollhouse-gov"]["rps"] / c32["tollhouse"]["rps"]
        derived["governance_throughput_cost"] = round(1 - kept, 4)
    if "tollhouse-gov" in c32 and "tollhouse-credits" in c32:
        kept = c32["tollhouse-credits"]["rps"] / c32["tollhouse-gov"]["rps"]
        derived["credits_throughput_cost"] = round(1 - kept, 4)
        added = c1["tollhouse-credits"]["p50_ms"] - c1["tollhouse-gov"]["p50_ms"]
        derived["credits_added_p50_ms"] = round(added, 3)
    if "tollhouse-gov" in c32 and "tollhouse-policies" in c32:
        kept = c32["tollhouse-policies"]["rps"] / c32["tollhouse-gov"]["rps"]
        derived["policies_throughput_cost"] = round(1 - kept, 4)
        added = c1["tollhouse-policies"]["p50_ms"] - c1["tollhouse-gov"]["p50_ms"]
        derived["policies_added_p50_ms"] = round(added, 3)
    for name in ("tollhouse", "tollhouse-gov"):
        before = name.replace("tollhouse", "baseline")
        if name in c32 and before in c32:
            derived[f"{name}_rps_vs_baseline"] = round(c32[name]["rps"] / c32[before]["rps"], 4)
            added = c1[name]["p50_ms"] - c1[before]["p50_ms"]
            derived[f"{name}_p50_ms_vs_baseline"] = round(added, 3)
    derived["foreign_cpus_max"] = max(
        s["foreign_cpus_max"] for sc in (c1, c32) for s in sc.values()
    )
    out["derived"] = derived
    return out


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        print("  " + "  ".join(cells))


def report(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    d = summary["derived"]
    print(f"\nc1: wrk -t1 -c1, {args.c1_seconds:g} s x {args.runs} runs (medians)")
    rows = [["target", "p50 ms", "p90 ms", "p99 ms", "added p50 ms", "req/s", "errors"]]
    for name, s in summary["c1"].items():
        added = d.get(f"{name}_added_p50_ms")
        rows.append(
            [name, f"{s['p50_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}"]
            + [f"{added:.3f}" if added is not None else "-", f"{s['rps']:.0f}", str(s["errors"])]
        )
    print_table(rows)
    print(f"\nc32: wrk -t2 -c32, {args.c32_seconds:g} s x {args.runs} runs (medians)")
    rows = [["target", "req/s", "p50 ms", "p99 ms", "vs LiteLLM", "errors"]]
    ref = summary["c32"].get("litellm", {}).get("rps")
    for name, s in summary["c32"].items():
        ratio = f"{s['rps'] / ref:.2f}x" if ref else "-"
        rows.append([name, f"{s['rps']:.0f}", f"{s['p50_ms']:.3f}", f"{s['p99_ms']:.3f}"])
        rows[-1] += [ratio, str(s["errors"])]
    print_table(rows)
    print()
    if "tollhouse_added_p50_ms" in d:
        added = d["tollhouse_added_p50_ms"]
        verdict = "PASS" if added <= TARGET_ADDED_P50_MS else "FAIL"
        print(
            f"target: Tollhouse adds {added:.3f} ms p50 at c1 (<= {TARGET_ADDED_P50_MS}): {verdict}"
        )
    if "tollhouse-gov_added_p50_ms" in d:
        added = d["tollhouse-gov_added_p50_ms"]
        verdict = "PASS" if added <= TARGET_GOV_ADDED_P50_MS else "FAIL"
        print(
            f"target: governance on adds {added:.3f} ms p50 at c1"
            f" (<= {TARGET_GOV_ADDED_P50_MS}): {verdict}"
        )
    if "governance_throughput_cost" in d:
        cost = d["governance_throughput_cost"]
        verdict = "PASS" if cost <= TARGET_GOV_COST else "FAIL"
        print(
            f"target: governance on costs {cost:.1%} of throughput at c32"
            f" (<= {TARGET_GOV_COST:.0%}): {verdict}"
        )
    if "credits_added_p50_ms" in d:
        added, cost = d["credits_added_p50_ms"], d["credits_throughput_cost"]
        verdict = "PASS" if added <= TARGET_CREDITS_ADDED_P50_MS else "FAIL"
        print(
            f"target: a prepaid account adds {added:+.3f} ms to the governed p50 at c1"
            f" (<= {TARGET_CREDITS_ADDED_P50_MS}): {verdict}"
        )
        verdict = "PASS" if cost <= TARGET_CREDITS_COST else "FAIL"
        print(
            f"target: a prepaid account costs {cost:.1%} of governed throughput at c32"
            f" (<= {TARGET_CREDITS_COST:.0%}): {verdict}"
        )
    if "policies_added_p50_ms" in d:
        added, cost = d["policies_added_p50_ms"], d["policies_throughput_cost"]
        verdict = "PASS" if added <= TARGET_POLICIES_ADDED_P50_MS else "FAIL"
        print(
            f"target: ten CEL policies add {added:+.3f} ms to the governed p50 at c1"
            f" (<= {TARGET_POLICIES_ADDED_P50_MS}): {verdict}; they cost {cost:.1%} of"
            " governed throughput at c32"
        )
    if "rps_ratio_tollhouse_to_litellm" in d:
        ratio = d["rps_ratio_tollhouse_to_litellm"]
        verdict = "PASS" if ratio >= TARGET_RPS_RATIO else "FAIL"
        print(f"target: Tollhouse req/s at c32 = {ratio:.2f}x LiteLLM's (>= 10x): {verdict}")
    for name in ("tollhouse", "tollhouse-gov"):
        if f"{name}_rps_vs_baseline" in d:
            print(
                f"{name} vs the baseline: {d[f'{name}_rps_vs_baseline'] - 1:+.1%} req/s at c32,"
                f" {d[f'{name}_p50_ms_vs_baseline']:+.3f} ms p50 at c1"
            )
    if d["foreign_cpus_max"] > QUIET_CPUS:
        print(
            f"warning: other processes kept up to {d['foreign_cpus_max']:.2f} CPUs busy during"
            " a run: these figures are disturbed; measure again on a quiet machine"
        )


def _terminate(signum: int, _frame: object) -> None:
    print("terminated: stopping every server", file=sys.stderr)
    raise SystemExit(128 + signum)  # unwinds through the finally that stops every server


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    governed = not args.skip_tollhouse and not args.skip_governance
    n_targets = 1 + (not args.skip_tollhouse) + governed + (not args.skip_litellm)
    n_targets += (1 + governed) if args.baseline else 0
    n_targets += governed and args.credits
    n_targets += governed and args.policies
    per_target = 2 * args.warmup_seconds + args.runs * (args.c1_seconds + args.c32_seconds)
    print(f"measuring for about {n_targets * per_target / 60:.1f} min plus start-up", flush=True)
    started = time.monotonic()
    cpus = h.cpu_layout(pin=not args.no_pin)
    servers.ensure_tools()
    before = h.CpuMeter([])
    time.sleep(1)
    idle_load = before.foreign_cpus()
    if idle_load > QUIET_CPUS:
        print(f"warning: the machine is busy ({idle_load:.2f} CPUs used by others)", flush=True)
    with tempfile.TemporaryDirectory(prefix="tollhouse-bench-") as tmp:
        procs = h.Processes(Path(tmp))
        try:
            targets = start_servers(args, procs, Path(tmp), cpus)
            print(f"cpus: {cpus}; " + ", ".join(f"{n} {u}" for n, (u, _) in targets.items()))
            raw = measure(args, targets, cpus, procs)
        except h.BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: every server stopped", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
    summary = summarize(raw)
    report(args, summary)
    elapsed = time.monotonic() - started
    print(f"total time {elapsed:.0f} s")
    if args.json:
        exe = None if args.skip_tollhouse else (args.tollhouse or servers.tollhouse_bin())
        machine = h.machine_info(servers.nginx_bin())
        machine["litellm"] = None if args.skip_litellm else servers.litellm_version()
        machine["tollhouse"] = servers.tollhouse_version(exe) if exe else None
        machine["cpu_layout"] = cpus
        machine["foreign_cpus_before"] = round(idle_load, 3)
        cmd = argv if argv is not None else sys.argv[1:]
        doc = {
            "command": " ".join(["python", "benchmarks/gateway.py", *cmd]),
            "machine": machine,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "summary": summary,
            "runs": raw,
            "elapsed_s": round(elapsed, 1),
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    errors = sum(s["errors"] for sc in ("c1", "c32") for s in summary[sc].values())
    if errors:
        print(f"warning: {errors} requests failed (non-2xx, timeout, socket)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
