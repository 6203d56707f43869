#!/usr/bin/env python3
"""What a policy decision costs, in-process: microseconds per ``llm.request`` decision.

    python benchmarks/policies.py [--decisions 20000] [--runs 5] [--json out.json]

The decision is the whole of what the gateway's choke point does for a request: pick
the policies that apply to the caller (cached per principal), build the input document,
prepare it once per engine, evaluate the conditions in order, count the decision. Cases:

  cel-1      one CEL deny policy that does not match (then one allow that does)
  cel-10     the ten CEL policies of ``policy_set.py`` attached to the caller: nine
             denies that do not match, then the allow that does — every one evaluated
  rego-1     case cel-1 with the deny written in Rego
  none       no policy applies to the caller (the fast path)

Each case runs three ways: ``warm``, the same request every time (as ``gateway.py``'s
wrk sends), which CEL answers from its memo of answers by the values its conditions
read; ``cold``, every request with another prompt size (``request.input_tokens``, which
a condition of each CEL case reads), so that every decision hands that over and
evaluates the conditions reading it; and ``first``, every decision the first after a
reload (nothing converted or remembered: every condition evaluated, every field it reads
handed over) — the most a decision costs; a thousand of them, timed one by one.

Figures are medians over ``--runs`` runs of ``--decisions`` decisions each, after a
warm-up. The target: an embedded CEL decision at most 30 µs (docs/benchmarks.md).
Bounded: about 10 s with the defaults; nothing leaves the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from policy_set import ALLOW, DENIES

from tollhouse.config import load_settings
from tollhouse.ops.metrics import Metrics
from tollhouse.policies.decide import Decider, Who
from tollhouse.policies.document import llm_request, llm_resource
from tollhouse.policies.setup import policy_engines

TARGET_CEL_DECISION_US = 30.0
FIRST_DECISIONS = 1000  # ``first`` decisions per run (each after loading the policies)

REGO_DENY = (
    "package bench\n\ndefault match := false\n\n"
    "match if {\n  input.request.max_output_tokens > 100000\n  input.request.stream\n}\n"
)


def row(name: str, effect: str, condition: str | None, engine: str = "cel", **more: Any) -> Any:
    return SimpleNamespace(
        id=f"pol_{name}",
        name=name,
        action="llm.request",
        effect=effect,
        engine=engine,
        condition=condition,
        rule=None,
        priority=more.get("priority", 0),
        attachments=[{"type": "tag", "tag": "bench"}],
        enabled=True,
        fail_mode="closed",
    )


CASES: dict[str, list[Any]] = {
    "none": [],
    "cel-1": [row("deny-0", "deny", DENIES[4]), row("allow", "allow", ALLOW)],
    "cel-10": [row(f"deny-{i}", "deny", c) for i, c in enumerate(DENIES)]
    + [row("allow", "allow", ALLOW)],
    "rego-1": [row("deny-0", "deny", REGO_DENY, "rego"), row("allow", "allow", ALLOW)],
}


class _Scope:
    def __init__(self, kind: str, ident: str, name: str, tags: tuple[str, ...]) -> None:
        self.kind, self.id, self.name, self.tags = kind, ident, name, tags


WHO = Who.of(
    (
        _Scope("key", "vk_bench", "bench key", ("bench",)),
        _Scope("team", "team_bench", "bench team", ("research",)),
        _Scope("customer", "cust_bench", "bench customer", ()),
    )
)


async def measure(case: str, decisions: int, mode: str = "warm") -> float:
    """Microseconds per decision, the request document built as the gate builds it;
    ``cold``: each with another ``input_tokens``; ``first``: each on a fresh load."""
    settings = load_settings(env={"TOLLHOUSE_CONFIG": "/dev/null"})
    metrics = Metrics()
    decider = Decider(policy_engines(settings))
    decider.load(CASES[case])
    counter = metrics.policy_decisions.labels("llm.request", "allow")
    request = llm_request(
        endpoint="chat", inbound="openai", model="gpt-4o-mini", stream=False,
        max_output_tokens=16, input_tokens=40, messages=1, tools=[], user="",
    )  # fmt: skip
    resource = llm_resource("gpt-4o-mini", "openai", "us")
    for _ in range(min(1000, decisions)):  # warm-up
        await decider.decide("llm.request", WHO, request, resource)
    if mode == "first":
        spent = 0.0
        for _ in range(FIRST_DECISIONS):
            decider.load(CASES[case])
            started = time.perf_counter()
            decision = await decider.decide("llm.request", WHO, request, resource)
            counter.inc()
            spent += time.perf_counter() - started
        assert decision.allowed, decision.reason
        return spent / FIRST_DECISIONS * 1e6
    started = time.perf_counter()
    for n in range(decisions):
        if mode == "cold":
            request = {**request, "input_tokens": 40 + n}
        decision = await decider.decide("llm.request", WHO, request, resource)
        counter.inc()
    elapsed = time.perf_counter() - started
    assert decision.allowed, decision.reason
    return elapsed / decisions * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (1000 <= args.decisions <= 1_000_000 and 1 <= args.runs <= 21):
        parser.error("--decisions 1000..1000000, --runs 1..21")
    names = [f"{case} {mode}" for case in CASES for mode in ("warm", "cold", "first")]
    runs: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.runs):
        for name in names:  # cases take turns within every run
            case, mode = name.split()
            runs[name].append(asyncio.run(measure(case, args.decisions, mode)))
    medians = {case: statistics.median(values) for case, values in runs.items()}
    for case, value in medians.items():
        spread = max(runs[case]) - min(runs[case])
        print(f"{case:12} {value:8.1f} µs per decision  (runs spread {spread:.1f} µs)")
    cel = medians["cel-1 cold"]
    verdict = "PASS" if cel <= TARGET_CEL_DECISION_US else "FAIL"
    print(f"target: a CEL decision {cel:.1f} µs (<= {TARGET_CEL_DECISION_US:g}): {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"medians": medians, "runs": runs}, indent=2) + "\n")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
