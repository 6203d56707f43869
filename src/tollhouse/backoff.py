"""How long to wait before trying again: one formula for every retry loop.

``Backoff(base_s, cap_s, jitter)`` waits ``base_s × 2^n`` before retry ``n`` (counted
from 0), never more than ``cap_s``; with ``jitter`` ("full jitter") a uniform draw from
0 to that, so that many clients that failed together do not retry together::

    backoff = Backoff(0.25, 8.0, jitter=True)
    await asyncio.sleep(backoff.delay(retry))   # retry 0: up to 0.25 s, 1: up to 0.5 s …

Who uses it, with what:

- provider retries (``gateway/upstreams.py``): ``retry_backoff_s``, ``retry_backoff_max_s``,
  jittered (many requests fail at once when a provider does);
- alert deliveries (``alerts/dispatcher.py``): ``alert_retry_base_s``,
  ``alert_retry_max_s``, jittered (every replica retries the same receivers);
- background batches (``background.BatchQueue``: alert events, Redis settles) and the
  ledger writer (``ledger/recorder.py``): 0.05 s doubling to their cap, no jitter (one
  task per process, retrying its own store).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Its own generator: jitter drawn from the module-level one would move the global state
# that libraries (and Hypothesis, in the suite) expect no one else to touch.
_JITTER = random.Random()


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float
    cap_s: float
    jitter: bool = False

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry ``retry`` (0 for the first): ``base × 2^retry``,
        capped. Exponents are bounded, so a loop that counts forever cannot overflow."""
        return min(self.cap_s, self.base_s * 2.0 ** min(retry, 64))

    def delay(self, retry: int) -> float:
        """The wait before retry ``retry``: the ceiling, or a uniform draw below it."""
        ceiling = self.ceiling(retry)
        return _JITTER.uniform(0, ceiling) if self.jitter else ceiling
