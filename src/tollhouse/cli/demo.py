"""``tollhouse demo``: the whole request path, offline, in under a minute.

Starts ``tollhouse dev-upstream`` and a gateway on free loopback ports with a throwaway
SQLite ledger, sends requests through the official ``openai`` SDK (plain, streaming, an
Anthropic model behind the OpenAI API, embeddings, and a refused unpriced model), and
prints what the ledger recorded.
"""

from __future__ import annotations

import json
import tempfile
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from tollhouse.cli.processes import free_port, tollhouse_process
from tollhouse.cli.tables import render_table
from tollhouse.money import format_usd


@click.command()
def demo() -> None:
    """Run gateway + dev upstream locally and show exact metering of a few requests."""
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
        env = {
            "TOLLHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}",
            "TOLLHOUSE_LOG_LEVEL": "warning",
            "TOLLHOUSE_ALLOW_ANONYMOUS": "true",
            "OPENAI_BASE_URL": f"{upstream}/v1",
            "OPENAI_API_KEY": "sk-demo-upstream",
            "ANTHROPIC_BASE_URL": upstream,
            "ANTHROPIC_API_KEY": "sk-ant-demo-upstream",
            "TOLLHOUSE_CONFIG": str(Path(tmp) / "none.yaml"),
        }
        Path(env["TOLLHOUSE_CONFIG"]).write_text("{}\n")
        click.echo(f"dev upstream on {upstream}, gateway on {gateway}\n")
        with (
            tollhouse_process(["dev-upstream", "--port", str(up_port)], {}, f"{upstream}/health"),
            tollhouse_process(["serve", "--port", str(gw_port)], env, f"{gateway}/readyz"),
        ):
            client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="demo", max_retries=0)
            _send(client, openai)
            records = _usage(gateway)
    click.echo("\nWhat the ledger recorded (cost is exact, in USD):\n")
    click.echo(
        render_table(
            ["endpoint", "provider/model", "stream", "status", "prompt", "completion", "cost"],
            [
                [
                    r["endpoint"],
                    f"{r['provider']}/{r['model']}",
                    "yes" if r["streamed"] else "no",
                    r["http_status"],
                    r["prompt_tokens"],
                    r["completion_tokens"],
                    format_usd(r["cost"]),
                ]
                for r in reversed(records)
            ],
        )
    )


def _send(client: Any, openai: Any) -> None:
    messages = [{"role": "user", "content": "Say hello to Tollhouse."}]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=12)
    click.echo(f"gpt-4o-mini (plain):      {reply.choices[0].message.content}")
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, max_tokens=8, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    click.echo(f"gpt-4o-mini (streamed):   {text}")
    reply = client.chat.completions.create(
        model="claude-3-5-haiku-latest", messages=messages, max_tokens=10
    )
    click.echo(f"claude via OpenAI API:    {reply.choices[0].message.content}")
    vectors = client.embeddings.create(model="text-embedding-3-small", input=["tollhouse"])
    click.echo(f"embedding dimensions:     {len(vectors.data[0].embedding)}")
    try:
        client.chat.completions.create(model="openai/my-unpriced-model", messages=messages)
    except openai.BadRequestError as exc:
        click.echo(f"unpriced model refused:   400 {exc.body.get('code')}")


def _usage(gateway: str) -> list[dict[str, Any]]:
    # The ledger is written in batches off the hot path; wait for this demo's records.
    import time

    for _ in range(50):
        with urllib.request.urlopen(f"{gateway}/api/usage?limit=100") as resp:
            body = json.loads(resp.read(), parse_float=Decimal)
        if body["count"] >= 4:
            return list(body["usage"])
        time.sleep(0.1)
    return list(body["usage"])
