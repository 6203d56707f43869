"""``tollhouse dev-upstream``: a local OpenAI/Anthropic-compatible server for offline work."""

from __future__ import annotations

import click


@click.command("dev-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9000, show_default=True)
@click.option("--latency-ms", type=float, default=0.0, help="Delay before every response.")
@click.option("--chunk-delay-ms", type=float, default=0.0, help="Pause between stream chunks.")
@click.option("--fail-status", type=int, default=None, help="Answer errors with this status.")
@click.option("--fail-every", type=int, default=0, help="Fail only every Nth request.")
@click.option(
    "--disconnect-after-chunks", type=int, default=None, help="Drop streams after N chunks."
)
@click.option("--api-key", default=None, help="Require this key from clients.")
def dev_upstream(
    host: str,
    port: int,
    latency_ms: float,
    chunk_delay_ms: float,
    fail_status: int | None,
    fail_every: int,
    disconnect_after_chunks: int | None,
    api_key: str | None,
) -> None:
    """Serve deterministic OpenAI and Anthropic responses (see docs/dev-upstream.md)."""
    from tollhouse.devupstream import DevUpstreamOptions, serve

    options = DevUpstreamOptions(
        latency_ms=latency_ms,
        chunk_delay_ms=chunk_delay_ms,
        fail_status=fail_status,
        fail_every=fail_every,
        disconnect_after_chunks=disconnect_after_chunks,
        api_key=api_key,
    )
    click.echo(f"dev-upstream on http://{host}:{port} (OpenAI: /v1, Anthropic: /v1/messages)")
    serve(options, host=host, port=port)
