"""``tollhouse dev-upstream``: a local server speaking the OpenAI and Anthropic wire formats.

It stands in for real providers in tests, benchmarks and demos (docs/testing.md: the only
stand-ins are real servers on loopback). Replies are deterministic, faults are
injectable per process (``DevUpstreamOptions``) or per request (``POST /_dev/scenario``),
and ``GET /_dev/stats`` counts what arrived, including streams a client abandoned.
See ``docs/dev-upstream.md``.

::

    from tollhouse.devupstream import DevUpstreamOptions, create_app, serve

    app = create_app(DevUpstreamOptions(chunk_delay_ms=5))   # in-process ASGI app
    serve(DevUpstreamOptions(latency_ms=20), port=9000)      # blocking, for the CLI
"""

from __future__ import annotations

from .app import create_app
from .options import DevUpstreamOptions
from .server import BackgroundServer, serve

__all__ = ["BackgroundServer", "DevUpstreamOptions", "create_app", "serve"]
