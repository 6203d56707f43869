"""Prometheus metrics on a registry owned by the app (no module-level collectors).

Money is exported as integer nano-dollars (``tollhouse_cost_nanodollars_total``):
Prometheus stores float64, which is exact for integers below 2^53 (about 9 million USD
in nanos per series), and dividing by 1e9 in a query is the reader's business.

Label values stay a bounded set: priced models come from the catalog and the
configuration, but unpriced ones (``allow_unpriced``) are named by clients. The first
``UNPRICED_MODEL_LABELS`` distinct unpriced models keep their own ``model`` label; later
ones are counted under ``model="_other"`` (with their provider).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

UNPRICED_MODEL_LABELS = 100
OTHER_MODEL = "_other"

# A decision takes microseconds embedded, milliseconds against an external OPA.
_POLICY_BUCKETS = (0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[str, str, str, int], tuple[Any, ...]] = {}
        self._unpriced_models: set[tuple[str, str]] = set()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tollhouse_requests",
            "Inference requests answered, by endpoint, provider, model and HTTP status.",
            ["endpoint", "provider", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tollhouse_request_duration_seconds",
            "Time from request to last byte, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "tollhouse_upstream_errors",
            "Failed upstream attempts (each retry counts), by provider and kind.",
            ["provider", "kind"],
            registry=r,
        )
        self.tokens = Counter(
            "tollhouse_tokens",
            "Tokens consumed, by provider, model and kind (prompt, completion, cached).",
            ["provider", "model", "kind"],
            registry=r,
        )
        self.cost = Counter(
            "tollhouse_cost_nanodollars",
            "Spend in nano-dollars (1e-9 USD), by provider and model.",
            ["provider", "model"],
            registry=r,
        )
        self.unpriced = Counter(
            "tollhouse_unpriced_requests",
            "Requests served for a model with no known price (operator allowed).",
            ["provider", "model"],
            registry=r,
        )
        self.ledger_records_written = Counter(
            "tollhouse_usage_records_written", "Usage records written to the ledger.", registry=r
        )
        self.ledger_records_rejected = Counter(
            "tollhouse_usage_records_rejected",
            "Usage records the database refused (logged in full at ERROR).",
            registry=r,
        )
        self.ledger_records_spooled = Counter(
            "tollhouse_usage_records_spooled",
            "Usage records spooled to local disk while the database was unavailable.",
            registry=r,
        )
        self.meter_fallback_admissions = Counter(
            "tollhouse_meter_fallback_admissions",
            "Requests admitted on a replica's local meter while Redis was unreachable "
            "(keys and teams with on_meter_failure: open).",
            registry=r,
        )
        self.ledger_write_failures = Counter(
            "tollhouse_usage_write_failures",
            "Failed ledger batch writes (records are kept and retried).",
            registry=r,
        )
        self.ledger_pending = Gauge(
            "tollhouse_usage_records_pending", "Usage records not yet written.", registry=r
        )
        self.in_flight = Gauge(
            "tollhouse_requests_in_flight", "Inference requests being served.", registry=r
        )
        self.policy_decisions = Counter(
            "tollhouse_policy_decisions",
            "Policy decisions, by action and outcome (allow, deny).",
            ["action", "decision"],
            registry=r,
        )
        self.policy_seconds = Histogram(
            "tollhouse_policy_decision_seconds",
            "Time to decide, by the engines the decision used (none: no policy applied).",
            ["engines"],
            buckets=_POLICY_BUCKETS,
            registry=r,
        )
        self.policy_errors = Counter(
            "tollhouse_policy_errors",
            "Conditions that could not be evaluated, by engine and fail mode.",
            ["engine", "fail_mode"],
            registry=r,
        )
        self.sandboxes = Gauge(
            "tollhouse_sandboxes",
            "Sandboxes in the pool by status (as of the reaper's last pass).",
            ["status"],
            registry=r,
        )
        self.sandbox_allocations = Histogram(
            "tollhouse_sandbox_allocation_seconds",
            "Time to answer an allocation: a new lease, or the track's own (held).",
            ["outcome"],
            buckets=_POLICY_BUCKETS[2:] + (1.0,),
            registry=r,
        )
        self.sandbox_exhausted = Counter(
            "tollhouse_sandbox_pool_exhausted",
            "Allocations refused because no sandbox was available.",
            registry=r,
        )

    def observe_request(
        self,
        endpoint: str,
        provider: str,
        model: str,
        status: int,
        seconds: float,
        tokens: tuple[int, int, int],
        cost_nanos: int,
        priced: bool,
    ) -> None:
        """Count one finished inference request (prompt, completion, cached tokens)."""
        if not priced:
            model = self._unpriced_label(provider, model)
        key = (endpoint, provider, model, status)
        children = self._children.get(key)
        if children is None:
            # ``labels()`` validates and hashes its arguments on every call; resolving the
            # children once per label set keeps metrics off the hot path's profile.
            children = self._children[key] = (
                self.requests.labels(endpoint, provider, model, str(status)),
                self.latency.labels(endpoint),
                self.tokens.labels(provider, model, "prompt"),
                self.tokens.labels(provider, model, "completion"),
                self.tokens.labels(provider, model, "cached"),
                self.cost.labels(provider, model),
                self.unpriced.labels(provider, model),
            )
        requests, latency, prompt, completion, cached, cost, unpriced = children
        requests.inc()
        latency.observe(seconds)
        for child, count in ((prompt, tokens[0]), (completion, tokens[1]), (cached, tokens[2])):
            if count:
                child.inc(count)
        if cost_nanos:
            cost.inc(cost_nanos)
        if not priced:
            unpriced.inc()

    def _unpriced_label(self, provider: str, model: str) -> str:
        """``model``, or ``OTHER_MODEL`` once ``UNPRICED_MODEL_LABELS`` others are in use."""
        seen = self._unpriced_models
        if (provider, model) in seen:
            return model
        if len(seen) < UNPRICED_MODEL_LABELS:
            seen.add((provider, model))
            return model
        return OTHER_MODEL

    def render(self) -> bytes:
        return generate_latest(self.registry)
