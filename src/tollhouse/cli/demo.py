"""``tollhouse demo``: the whole request path, offline, in under a minute.

Starts ``tollhouse dev-upstream`` and a gateway on free loopback ports with a throwaway
SQLite ledger, then, through the official ``openai`` SDK:

1. creates a customer, a team under it and a virtual key under the team, with a small
   budget on the team and a request limit on the key (admin API);
2. sends plain, streaming, translated (Claude behind the OpenAI API) and embedding
   requests with that key, and shows an unpriced model refused;
3. keeps sending until the request limit refuses (429), then, with a second key, until
   the team's budget refuses (402);
4. opens a prepaid account for a second customer, spends its credit down to a 402
   ``insufficient_credits``, tops it up and is served again (``demo_credits``);
5. prints what the ledger recorded and the spend per scope, exactly.
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from tollhouse.cli import demo_credits
from tollhouse.cli.processes import free_port, tollhouse_process
from tollhouse.cli.tables import render_table
from tollhouse.money import format_usd

MESSAGES = [{"role": "user", "content": "Say hello to Tollhouse."}]


@click.command()
def demo() -> None:
    """Run gateway + dev upstream locally: keys, limits, budgets and exact metering."""
    try:
        import openai
    except ImportError:
        raise click.ClickException(
            "the demo drives the gateway with the official SDK: pip install 'tollhouse[demo]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="tollhouse-demo-") as tmp:
        up_port, gw_port = free_port(), free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        gateway = f"http://127.0.0.1:{gw_port}"
        config = Path(tmp) / "tollhouse.yaml"
        config.write_text("{}\n")
        env = {
            "TOLLHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}",
            "TOLLHOUSE_LOG_LEVEL": "warning",
            "TOLLHOUSE_CONFIG": str(config),
            "OPENAI_BASE_URL": f"{upstream}/v1",
            "OPENAI_API_KEY": "sk-demo-upstream",
            "ANTHROPIC_BASE_URL": upstream,
            "ANTHROPIC_API_KEY": "sk-ant-demo-upstream",
        }
        click.echo(f"dev upstream on {upstream}, gateway on {gateway}\n")
        with (
            tollhouse_process(["dev-upstream", "--port", str(up_port)], {}, f"{upstream}/health"),
            tollhouse_process(["serve", "--port", str(gw_port)], env, f"{gateway}/readyz"),
        ):
            admin = _Admin(gateway)
            ids = _create_entities(admin)
            key = ids["key"]
            client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)
            _send(client, openai)
            _hit_request_limit(client, openai)
            spender = openai.OpenAI(base_url=f"{gateway}/v1", api_key=ids["spender"], max_retries=0)
            _hit_budget(spender, openai)
            records = _usage(gateway)
            scopes = [
                ("customer", "acme", admin.get(f"customers/{ids['customer']}")["customer"]),
                ("team", "research", admin.get(f"teams/{ids['team']}")["team"]),
            ]
            demo_credits.run(gateway, openai)
    _print_ledger(records)
    click.echo("\nSpend per scope (the ledger and the counters agree to the nano-dollar):\n")
    rows = []
    for kind, name, entity in scopes:
        budget = entity.get("budget") or {}
        rows.append(
            [kind, name, _dec(budget.get("current_usage", 0)), _dec(budget.get("max_limit", 0))]
        )
    click.echo(render_table(["scope", "name", "spent (USD)", "budget (USD)"], rows))


class _Admin:
    """The admin API over loopback (open without an admin key, from 127.0.0.1 only)."""

    def __init__(self, base: str) -> None:
        self._base = f"{base}/api/governance/"

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self._base + path,
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read(), parse_float=Decimal))

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self._base + path, timeout=10) as response:
            return dict(json.loads(response.read(), parse_float=Decimal))


def _create_entities(admin: _Admin) -> dict[str, str]:
    customer = admin.post(
        "customers", {"name": "acme", "budget": {"max_limit": 10, "reset_duration": "1M"}}
    )["customer"]
    team = admin.post(
        "teams",
        {
            "name": "research",
            "customer_id": customer["id"],
            "budget": {"max_limit": 0.0004, "reset_duration": "1d"},
        },
    )["team"]
    key = admin.post(
        "virtual-keys",
        {
            "name": "notebook",
            "team_id": team["id"],
            "rate_limit": {"request_max_limit": 8, "request_reset_duration": "1h"},
        },
    )["virtual_key"]
    spender = admin.post("virtual-keys", {"name": "batch-job", "team_id": team["id"]})
    click.echo(
        "created customer 'acme' (budget 10 USD / month) → team 'research' (budget "
        "0.0004 USD / day) → keys 'notebook' (8 requests / hour) and 'batch-job'\n"
    )
    return {
        "customer": customer["id"],
        "team": team["id"],
        "key": key["value"],
        "spender": spender["virtual_key"]["value"],
    }


def _send(client: Any, openai: Any) -> None:
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=12)
    click.echo(f"gpt-4o-mini (plain):      {reply.choices[0].message.content}")
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=8, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    click.echo(f"gpt-4o-mini (streamed):   {text}")
    reply = client.chat.completions.create(
        model="claude-3-5-haiku-latest", messages=MESSAGES, max_tokens=10
    )
    click.echo(f"claude via OpenAI API:    {reply.choices[0].message.content}")
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["tollhouse"])
    click.echo(f"embedding dimensions:     {len(vectors.data[0].embedding)}")
    try:
        client.chat.completions.create(model="openai/my-unpriced-model", messages=MESSAGES)
    except openai.BadRequestError as exc:
        click.echo(f"unpriced model refused:   400 {exc.body.get('code')}")


def _hit_request_limit(client: Any, openai: Any) -> None:
    for sent in range(1, 20):
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=4)
        except openai.RateLimitError as exc:
            retry = exc.response.headers.get("retry-after")
            click.echo(f"\nrequest limit:            429 after {sent - 1} more (retry in {retry}s)")
            click.echo(f"  {exc.body.get('message')}")
            return
    click.echo("\nrequest limit:            never refused (unexpected)")


def _hit_budget(client: Any, openai: Any) -> None:
    for sent in range(1, 200):
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)
        except openai.APIStatusError as exc:
            if exc.status_code != 402:
                raise
            click.echo(f"team budget:              402 after {sent - 1} requests")
            click.echo(f"  {exc.body.get('message')}")
            return
    click.echo("team budget:              never refused (unexpected)")


def _usage(gateway: str) -> list[dict[str, Any]]:
    # The ledger is written in batches off the hot path; give the last batch a moment.
    time.sleep(0.3)
    with urllib.request.urlopen(f"{gateway}/api/usage?limit=1000") as resp:
        body = json.loads(resp.read(), parse_float=Decimal)
    return list(body["usage"])


def _print_ledger(records: list[dict[str, Any]]) -> None:
    click.echo("\nWhat the ledger recorded (cost is exact, in USD):\n")
    by_target: dict[tuple[str, str, bool], list[Any]] = {}
    refused = [r for r in records if r["status"] == "refused"]
    for r in records:
        if r["status"] == "refused":
            continue
        group = by_target.setdefault(
            (r["endpoint"], f"{r['provider']}/{r['model']}", r["streamed"]), [0, 0, 0, Decimal(0)]
        )
        group[0] += 1
        group[1] += r["prompt_tokens"]
        group[2] += r["completion_tokens"]
        group[3] += Decimal(str(r["cost"]))
    rows = [
        [endpoint, target, "yes" if streamed else "no", n, prompt, completion, format_usd(cost)]
        for (endpoint, target, streamed), (n, prompt, completion, cost) in sorted(by_target.items())
    ]
    click.echo(
        render_table(
            ["endpoint", "provider/model", "stream", "requests", "prompt", "completion", "cost"],
            rows,
        )
    )
    if refused:
        click.echo(f"\nrefused before any provider saw them (no cost): {len(refused)}")


def _dec(value: Any) -> str:
    return format_usd(Decimal(str(value)))
