"""The ten CEL policies both policy benchmarks measure (``policies.py`` in-process,
``gateway.py --policies`` through a real server): nine denies that do not match a
benchmark request, then the allow that does — so every condition is evaluated. They
read every part of the document (request strings and numbers, tags, the customer's
name, the region, the hour and weekday). None uses ``matches``: cel-rust compiles its
pattern on every evaluation (about 15 µs here, docs/policies.md), which would be the
cost of that one condition rather than of policies."""

from __future__ import annotations

DENIES = [
    '(request.model.startsWith("o1") || request.model.startsWith("o3")) && time.hour >= 22',
    "request.stream && request.max_output_tokens > 100000",
    '!resource.region.startsWith("eu") && "eu-only" in principal.tags',
    "size(request.tools) > 0 && !('agents' in principal.tags)",
    "request.input_tokens > 1000000",
    'principal.customer.name == "blocked-customer"',
    "time.weekday == 9",
    'request.endpoint == "embeddings" && "no-embeddings" in principal.tags',
    'request.user == "banned-user"',
]
ALLOW = 'request.model.startsWith("gpt-4o") || request.model.startsWith("claude-")'
TAG = "bench-policies"  # the policies attach to this tag: only keys carrying it pay


def bodies() -> list[dict[str, object]]:
    """The ten as ``POST /api/policies`` bodies."""
    attached = [{"type": "tag", "tag": TAG}]
    denies = [
        {"name": f"bench-deny-{i}", "action": "llm.request", "effect": "deny",
         "condition": condition, "attachments": attached}
        for i, condition in enumerate(DENIES)
    ]  # fmt: skip
    allow = {"name": "bench-allow", "action": "llm.request", "effect": "allow",
             "condition": ALLOW, "attachments": attached}  # fmt: skip
    return [*denies, allow]
