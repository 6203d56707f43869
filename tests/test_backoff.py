"""``Backoff``: one formula for every retry loop, as each caller configures it."""

from __future__ import annotations

import pytest

from tollhouse.backoff import Backoff


def test_doubles_from_the_base_up_to_the_cap():
    backoff = Backoff(0.05, 2.0)
    assert [backoff.delay(n) for n in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert backoff.delay(10_000) == 2.0  # a loop that counts forever does not overflow


@pytest.mark.parametrize("retry", [0, 1, 3, 8, 40])
def test_full_jitter_draws_below_the_ceiling(retry):
    backoff = Backoff(0.25, 8.0, jitter=True)
    draws = [backoff.delay(retry) for _ in range(200)]
    assert all(0 <= d <= backoff.ceiling(retry) for d in draws)
    assert len(set(draws)) > 1


def test_a_zero_base_never_waits():
    assert Backoff(0.0, 8.0, jitter=True).delay(5) == 0.0
