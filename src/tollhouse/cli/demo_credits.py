"""The prepaid part of ``tollhouse demo``: a customer whose credit runs out (402
``insufficient_credits``), then a top-up that restores service, and the account's
journal to the nano-dollar.

Offline, so the top-up is an operator's grant through the admin API; with Stripe
configured the same credit arrives from a Checkout payment (docs/credits.md).
"""

from __future__ import annotations

import json
import time
import urllib.request
from decimal import Decimal
from typing import Any

import click

from tollhouse.cli.tables import render_table
from tollhouse.money import format_usd

MESSAGES = [{"role": "user", "content": "Say hello to Tollhouse."}]


def _call(base: str, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
        method=method,
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read(), parse_float=Decimal)


def run(gateway: str, openai: Any) -> None:
    """Open a prepaid account, spend it down to a refusal, top it up, spend again."""
    customer = _call(gateway, "POST", "/api/governance/customers", {"name": "startup"})
    customer_id = customer["customer"]["id"]
    key = _call(
        gateway,
        "POST",
        "/api/governance/virtual-keys",
        {"name": "app", "customer_id": customer_id},
    )["virtual_key"]["value"]
    account = _call(
        gateway,
        "POST",
        "/api/credits/accounts",
        {"owner_type": "customer", "owner_id": customer_id},
    )["account"]
    grants = f"/api/credits/accounts/{account['id']}/grants"
    _call(gateway, "POST", grants, {"amount": 0.0001, "category": "promotional"})
    click.echo(
        "\ncreated customer 'startup' with a prepaid account and 0.0001 USD of promotional "
        "credit; key 'app' draws on it"
    )
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=0)
    served = _until_refused(client, openai)
    balance = _call(gateway, "GET", "/v1/credits", key=key)["data"]
    click.echo(f"  GET /v1/credits: available {_usd(balance['available'])} USD")
    _call(
        gateway,
        "POST",
        grants,
        {"amount": 0.01, "category": "adjustment", "memo": "top-up"},
    )
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=12)
    click.echo(
        f"top-up of 0.01 USD:       served again ({reply.choices[0].message.content!r}, "
        f"after {served} before the refusal)"
    )
    _print_journal(gateway, account["id"])


def _until_refused(client: Any, openai: Any) -> int:
    for sent in range(200):
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)
        except openai.APIStatusError as exc:
            if exc.status_code != 402:
                raise
            click.echo(f"prepaid credit:           402 {exc.body.get('code')} after {sent}")
            click.echo(f"  {exc.body.get('message')}")
            return sent
    raise click.ClickException("the prepaid account never ran out (unexpected)")


def _print_journal(gateway: str, account_id: str) -> None:
    # Posts are booked with their usage records, in batches off the hot path.
    time.sleep(0.3)
    entries = _call(gateway, "GET", f"/api/credits/accounts/{account_id}/ledger?limit=1000")
    click.echo("\nThe account's journal, oldest first (every movement balanced, exact):\n")
    counts: dict[str, list[Any]] = {}
    for entry in reversed(entries["entries"]):
        row = counts.setdefault(entry["kind"], [0, Decimal(0)])
        row[0] += 1
        row[1] += Decimal(str(entry["amount"]))
    rows = [[kind, n, format_usd(total)] for kind, (n, total) in counts.items()]
    click.echo(render_table(["movement", "count", "amount (USD)"], rows))
    account = _call(gateway, "GET", f"/api/credits/accounts/{account_id}")["account"]
    balance = account["balance"]
    click.echo(
        f"\nbalance: total {_usd(balance['total'])}, reserved "
        f"{_usd(balance['reserved'])}, available {_usd(balance['available'])} USD"
    )


def _usd(value: Any) -> str:
    return format_usd(Decimal(str(value)))
