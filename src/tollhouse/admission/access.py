"""Who may call, and what they may call: the virtual key a request carries, and the
targets that key may reach (docs/governance.md, *Keys* and *Admission*).

Keys are stored as hashes (``tollhouse.governance.keys``); the engine looks the
presented value up in its snapshot, checks it is active and unexpired, and then asks
``allowed_targets`` which of a model's targets it may reach.
"""

from __future__ import annotations

from collections.abc import Mapping

from tollhouse.admission import refusals
from tollhouse.admission.snapshot import KeyInfo
from tollhouse.gateway.routing import Target
from tollhouse.governance.keys import PREFIX


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The virtual key a request carries, or ``None``.

    Bifrost's ``x-bf-vk`` is always a virtual key. ``Authorization: Bearer`` and
    ``x-api-key`` (the Anthropic SDK's header) count only when they hold a ``th-`` key:
    SDKs insist on sending *some* API key, and with anonymous access allowed a
    placeholder such as ``sk-anything`` must not be mistaken for a wrong virtual key
    (Bifrost does the same with its ``sk-bf-`` prefix).
    """
    # One pass over the headers: a Mapping lookup of an absent header raises and catches
    # a KeyError inside Starlette's ``Headers.get``, three times per request otherwise.
    bifrost = api_key = authorization = None
    for name, value in headers.items():
        name = name.lower()
        if name == "authorization":
            authorization = value if authorization is None else authorization
        elif name == "x-api-key":
            api_key = value if api_key is None else api_key
        elif name == "x-bf-vk":
            bifrost = value if bifrost is None else bifrost
    if bifrost is not None:
        return bifrost.strip()
    if api_key and api_key.strip().startswith(PREFIX):
        return api_key.strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token.startswith(PREFIX):
            return token
    return None


def allowed_targets(
    key: KeyInfo, requested: str, targets: tuple[Target, ...]
) -> tuple[Target, ...]:
    """The targets ``key`` may use; raises ``ModelNotAllowed`` when none."""
    models = key.allowed_models
    if models is not None and requested not in models:
        targets = tuple(t for t in targets if t.model in models or t.label in models)
        if not targets:
            raise refusals.model_not_allowed(key, requested, models)
    providers = key.allowed_providers
    if providers is not None:
        targets = tuple(t for t in targets if t.provider in providers)
        if not targets:
            raise refusals.provider_not_allowed(key, requested, providers)
    return targets
