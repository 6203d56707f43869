"""OpenAI's ``x-ratelimit-*`` headers, on every admitted request and every refusal.

``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests``,
``x-ratelimit-reset-requests`` and the ``-tokens`` trio, each from the tightest scope
(key, team or customer) that has the limit; a key without rate limits sends none.
"""

from __future__ import annotations

from tollhouse.admission.meter import Counter, CounterId
from tollhouse.admission.plans import Plan

NAMES = {
    kind: tuple(f"x-ratelimit-{what}-{kind}" for what in ("limit", "remaining", "reset"))
    for kind in ("requests", "tokens")
}


def rate_headers(plan: Plan, counters: dict[CounterId, Counter], now_us: int) -> dict[str, str]:
    """The headers for ``plan``'s rate counters as they stand at ``now_us``."""
    headers: dict[str, str] = {}
    if not plan.rates:
        return headers
    for kind, ids in plan.rates:
        tightest = counters[ids[0]]
        left = tightest.limit - tightest.committed - tightest.reserved
        for counter_id in ids[1:]:
            counter = counters[counter_id]
            remaining = counter.limit - counter.committed - counter.reserved
            if remaining < left:
                tightest, left = counter, remaining
        limit_name, remaining_name, reset_name = NAMES[kind]
        headers[limit_name] = str(tightest.limit)
        headers[remaining_name] = str(left if left > 0 else 0)
        if tightest.end is not None:
            headers[reset_name] = reset_text(tightest.end_us - now_us)
    return headers


def reset_text(left_us: int) -> str:
    """OpenAI's reset form: ``1s``, ``6m0s``, ``1h2m3s``, ``20ms``."""
    if left_us < 1_000_000:
        return f"{-(-max(left_us, 0) // 1000)}ms"
    whole = -(-left_us // 1_000_000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
