"""The dashboard's pages on a ledger of ten million usage records.

    python benchmarks/dashboard.py [--records N] [--quick] [--store postgres|sqlite]
                                   [--requests 30] [--json out.json]

Seeds a database (PostgreSQL 15 on loopback from ``devtools/stack.py``, or an SQLite
file) with 20 customers, 100 teams and 1,000 virtual keys made through the governance
service, then --records usage records (default 10,000,000; 1,000,000 with --quick) in
SQL: 90 days, keys skewed (a few heavy ones), 12 models on 3 providers, 3 % errors and 1 %
refusals. The ledger's indexes are dropped for the insert and built again after it (as
a bulk load is done); the roll-ups are then built by ``ledger.verify.rebuild``, the
repair an operator runs after an import, and timed. Then ``tollhouse serve`` (one
worker) answers every page --requests times in a row to one logged-in client, after 3
untimed ones; each answer must be a 200 with the page's content.

Targets (issue 15), exit status 1 when missed: the overview and the log pages p95 <
200 ms. Figures: docs/benchmarks.md#dashboard. The code measured is this checkout's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "src"), str(HERE), str(REPO)]  # this checkout's tollhouse first
import harness as h  # noqa: E402
import httpx  # noqa: E402
from devtools.stack import postgres  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from tollhouse.db.schema import upgrade  # noqa: E402
from tollhouse.governance import service  # noqa: E402
from tollhouse.governance.schemas import CustomerCreate, TeamCreate, VirtualKeyCreate  # noqa: E402
from tollhouse.ledger.models import usage_records  # noqa: E402
from tollhouse.ledger.service import encode_cursor  # noqa: E402
from tollhouse.ledger.verify import rebuild  # noqa: E402

ADMIN_KEY = "bench-dashboard-admin-key-" + "x" * 20
TARGET_MS = 200.0
CUSTOMERS, TEAMS_PER, KEYS_PER = 20, 5, 10  # 100 teams, 1,000 keys
MODELS = [
    ("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("openai", "o3-mini"),
    ("openai", "gpt-4.1"), ("openai", "text-embedding-3-small"),
    ("anthropic", "claude-3-5-haiku-latest"), ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-opus-4-1"), ("openrouter", "meta-llama/llama-3.3-70b-instruct"),
    ("openrouter", "mistralai/mistral-large"), ("openrouter", "qwen/qwen-2.5-72b-instruct"),
    ("openrouter", "deepseek/deepseek-chat"),
]  # fmt: skip
DAYS = 90
CHUNK = 1_000_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, help="usage records (10,000,000; 1,000,000 --quick)")
    p.add_argument("--quick", action="store_true", help="a million records")
    p.add_argument("--store", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--requests", type=int, default=30, help="timed requests per page (30)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON")
    args = p.parse_args(argv)
    args.records = args.records or (1_000_000 if args.quick else 10_000_000)
    return args


# --- seeding -----------------------------------------------------------------------------


async def governance(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    """Customers, teams and keys through the service; ``(key, team, customer)`` ids."""
    found = []
    async with engine.begin() as conn:
        for c in range(CUSTOMERS):
            customer = await service.create_customer(conn, CustomerCreate(name=f"customer {c:02d}"))
            for t in range(TEAMS_PER):
                body = TeamCreate(name=f"team {c:02d}-{t}", customer_id=customer.customer.id)
                team = await service.create_team(conn, body)
                for k in range(KEYS_PER):
                    key = await service.create_key(
                        conn, VirtualKeyCreate(name=f"key {c:02d}-{t}-{k}", team_id=team.team.id)
                    )
                    found.append((key.key.id, team.team.id, customer.customer.id))
    return found


def _insert_sql(dialect: str, start: int, count: int) -> str:
    """``count`` records numbered from ``start``, in one INSERT … SELECT."""

    def whole(expression: str) -> str:  # Postgres's CAST rounds; SQLite's truncates
        floor = f"floor({expression})" if dialect == "postgresql" else expression
        return f"CAST({floor} AS INTEGER)"

    if dialect == "postgresql":
        r = "random()"
        rows = f"SELECT g, {r} AS r1, {r} AS r2, {r} AS r3, {r} AS r4, {r} AS r5, {r} AS r6 " \
               f"FROM generate_series({start}, {start + count - 1}) g"  # fmt: skip
        when = f"now() - (s.r1 * interval '{DAYS} days')"
        cost = ("CASE WHEN s.r5 < 0.01 THEN 0 "
                "ELSE round((s.p * 0.00000015 + s.c * 0.0000006)::numeric, 9) END")  # fmt: skip
        latency = "round((exp(s.r4 * 7) + 20)::numeric, 3)::float8"
    else:
        r = "(abs(random()) / 9223372036854775807.0)"
        rows = f"WITH RECURSIVE n(g) AS (SELECT {start} UNION ALL SELECT g + 1 FROM n " \
               f"WHERE g < {start + count - 1}) SELECT g, {r} AS r1, {r} AS r2, {r} AS r3, " \
               f"{r} AS r4, {r} AS r5, {r} AS r6 FROM n"  # fmt: skip
        now = int(time.time())
        ago = f"CAST(s.r1 * {DAYS * 86400} AS INTEGER)"
        when = f"strftime('%Y-%m-%d %H:%M:%S', {now} - {ago}, 'unixepoch') || '.000000'"
        cost = "CASE WHEN s.r5 < 0.01 THEN 0 ELSE s.p * 150 + s.c * 600 END"  # nano-dollars
        latency = "round(20 + s.r4 * s.r4 * 4000, 3)"
    return f"""
INSERT INTO usage_records (id, created_at, key_id, team_id, customer_id, endpoint, provider,
    model, prompt_tokens, completion_tokens, cached_tokens, cost, priced, latency_ms, status,
    http_status, streamed)
SELECT 'req_bench_' || s.g, {when}, k.key_id, k.team_id, k.customer_id, 'chat', m.provider,
    m.model, s.p, s.c, 0, {cost}, true, {latency},
    CASE WHEN s.r5 < 0.01 THEN 'refused' WHEN s.r5 < 0.04 THEN 'error' ELSE 'success' END,
    CASE WHEN s.r5 < 0.01 THEN 429 WHEN s.r5 < 0.04 THEN 502 ELSE 200 END,
    s.r6 < 0.5
FROM (SELECT g, r1, r4, r5, r6, {whole("r2 * r2 * 1000")} AS kn,
             {whole(f"r3 * {len(MODELS)}")} AS mn,
             {whole("r6 * 2000")} AS p, {whole("r4 * 800")} AS c
      FROM ({rows}) raw) s
JOIN bench_keys k ON k.n = s.kn
JOIN bench_models m ON m.n = s.mn
"""


async def seed(engine: AsyncEngine, records: int) -> dict[str, float]:
    took: dict[str, float] = {}
    started = time.perf_counter()
    keys = await governance(engine)
    took["governance_s"] = time.perf_counter() - started
    dialect = engine.dialect.name
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE bench_keys (n INTEGER PRIMARY KEY, key_id TEXT, "
                                "team_id TEXT, customer_id TEXT)"))  # fmt: skip
        await conn.execute(text("CREATE TABLE bench_models (n INTEGER PRIMARY KEY, "
                                "provider TEXT, model TEXT)"))  # fmt: skip
        await conn.execute(
            text("INSERT INTO bench_keys VALUES (:n, :k, :t, :c)"),
            [{"n": n, "k": k, "t": t, "c": c} for n, (k, t, c) in enumerate(keys)],
        )
        await conn.execute(
            text("INSERT INTO bench_models VALUES (:n, :p, :m)"),
            [{"n": n, "p": p, "m": m} for n, (p, m) in enumerate(MODELS)],
        )
        for index in usage_records.indexes:  # a bulk load: the indexes are built after it
            await conn.run_sync(lambda sync, ix=index: ix.drop(sync))
    started = time.perf_counter()
    for start in range(1, records + 1, CHUNK):
        count = min(CHUNK, records - start + 1)
        async with engine.begin() as conn:
            await conn.execute(text(_insert_sql(dialect, start, count)))
        print(f"  {start + count - 1:,} records", flush=True)
    took["insert_s"] = time.perf_counter() - started
    started = time.perf_counter()
    async with engine.begin() as conn:
        for index in usage_records.indexes:
            await conn.run_sync(lambda sync, ix=index: ix.create(sync))
        await conn.execute(text("DROP TABLE bench_keys"))
        await conn.execute(text("DROP TABLE bench_models"))
    took["indexes_s"] = time.perf_counter() - started
    started = time.perf_counter()
    async with engine.begin() as conn:
        built = await rebuild(conn)
    took["rollups_s"] = time.perf_counter() - started
    took.update({f"rollup_rows_{grain}": float(n) for grain, n in built.items()})
    await _analyze(engine)
    return took


async def _analyze(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(
            text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE")
        )


# --- the pages ---------------------------------------------------------------------------


def pages(key_ids: list[str], team_id: str) -> list[tuple[str, str, str, bool]]:
    """``(name, path, a marker the answer must hold, under the target)``."""
    deep = encode_cursor(datetime.now(UTC) - timedelta(days=45), "req_bench_~")
    overlay = "&".join(f"key={k}" for k in key_ids[:5])
    chart, row = 'id="chart-data"', 'data-testid="log-row"'
    return [
        ("overview, 24 h", "/ui?range=24h", chart, True),
        ("overview, 7 d", "/ui?range=7d", chart, True),
        ("overview, 30 d", "/ui?range=30d", chart, True),
        ("overview, 90 d", "/ui?range=90d", chart, True),
        ("overview, 30 d by key", "/ui?range=30d&group=key", chart, True),
        (
            "overview, 30 d by model, requests",
            "/ui?range=30d&group=model&metric=requests",
            chart,
            True,
        ),
        ("overview, 7 d, 5 keys overlaid", f"/ui?range=7d&{overlay}", chart, True),
        ("log, first page", "/ui/logs", row, True),
        ("log, one key", f"/ui/logs?key_id={key_ids[0]}", row, True),
        ("log, a quiet key", f"/ui/logs?key_id={key_ids[-1]}", row, True),
        ("log, one team", f"/ui/logs?team_id={team_id}", row, True),
        ("log, errors", "/ui/logs?status=error", row, True),
        ("log, cost >= 0.0005", "/ui/logs?min_cost=0.0005", row, True),
        ("log, 45 days back", f"/ui/logs?cursor={deep}", row, True),
        ("log, live-tail refresh", "/ui/logs/rows", row, True),
        ("keys (1,000)", "/ui/keys", 'data-testid="key-row"', False),
        ("teams (100)", "/ui/teams", 'data-testid="scope-row"', False),
    ]


def time_pages(base: str, key_ids: list[str], team_id: str, requests: int) -> list[dict[str, Any]]:
    out = []
    with httpx.Client(base_url=base, timeout=60) as client:
        login = client.get("/ui/login")
        token = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert token, login.text[:500]
        client.post("/ui/login", data={"csrf": token.group(1), "key": ADMIN_KEY})
        for name, path, marker, targeted in pages(key_ids, team_id):
            timings = []
            for n in range(requests + 3):
                started = time.perf_counter()
                response = client.get(path)
                took = (time.perf_counter() - started) * 1000
                if response.status_code != 200 or marker not in response.text:
                    raise h.BenchError(f"{path}: {response.status_code} {response.text[:300]}")
                if n >= 3:
                    timings.append(took)
            ordered = sorted(timings)
            figure = {
                "page": name, "path": path, "targeted": targeted,
                "p50_ms": round(statistics.median(ordered), 2),
                "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
                "max_ms": round(ordered[-1], 2),
            }  # fmt: skip
            out.append(figure)
            mark = "" if not targeted else ("  ok" if figure["p95_ms"] < TARGET_MS else "  MISSED")
            p50, p95 = figure["p50_ms"], figure["p95_ms"]
            print(f"  {name:<36} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms{mark}", flush=True)
    return out


def serve(procs: h.Processes, workdir: Path, url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLHOUSE_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(":"),
        TOLLHOUSE_DATABASE_URL=url,
        TOLLHOUSE_ADMIN_KEY=ADMIN_KEY,
        TOLLHOUSE_LOG_LEVEL="warning",
        TOLLHOUSE_SPOOL_DIR=str(workdir / "spool"),
    )
    port = h.free_port()
    argv = [sys.executable, "-m", "tollhouse", "serve", "--host", "127.0.0.1", "--port", str(port)]
    procs.start("tollhouse", argv, env=env, cwd=workdir)
    base = f"http://127.0.0.1:{port}"
    procs.wait_ready("tollhouse", base + "/readyz", timeout=120)
    return base


async def _prepare(url: str, records: int) -> tuple[dict[str, float], list[str], str]:
    engine = create_async_engine(url)
    try:
        await upgrade(engine)
        took = await seed(engine, records)
        async with engine.connect() as conn:
            by_use = (
                "SELECT key_id, count(*) AS n FROM usage_records GROUP BY key_id ORDER BY n DESC"
            )
            heavy = await conn.execute(text(by_use))
            ranked = [row.key_id for row in heavy]
            team = (
                await conn.execute(text("SELECT id FROM teams ORDER BY name LIMIT 1"))
            ).scalar_one()
            took["records"] = float(
                (await conn.execute(text("SELECT count(*) FROM usage_records"))).scalar_one()
            )
        return took, ranked, str(team)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tollhouse-dashboard-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # Postgres runs as its own user below it
        if args.store == "postgres":
            cluster = stack.enter_context(postgres(workdir / "postgres"))
            url = cluster.url("tollhouse")
        else:
            url = f"sqlite+aiosqlite:///{workdir / 'dashboard.db'}"
        print(f"seeding {args.records:,} usage records on {args.store} ...", flush=True)
        took, ranked, team = asyncio.run(_prepare(url, args.records))
        print("  " + ", ".join(f"{k} {v:,.1f}" for k, v in took.items()), flush=True)
        procs = h.Processes(workdir)
        stack.callback(procs.stop_all)
        try:
            base = serve(procs, workdir, url)
            figures = time_pages(base, ranked, team, args.requests)
        except h.BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    missed = [f for f in figures if f["targeted"] and f["p95_ms"] >= TARGET_MS]
    verdict = "PASS" if not missed else "FAIL (" + ", ".join(f["page"] for f in missed) + ")"
    print(f"target: overview and log pages p95 < {TARGET_MS:.0f} ms: {verdict}")
    print(f"total time {time.monotonic() - started:.0f} s")
    if args.json:
        git = ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]
        doc = {
            "command": " ".join(["python", "benchmarks/dashboard.py", *(argv or sys.argv[1:])]),
            "commit": subprocess.run(git, capture_output=True, text=True).stdout.strip(),
            "store": args.store, "seed": took, "pages": figures,
        }  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
