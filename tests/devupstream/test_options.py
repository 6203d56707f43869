"""``DevUpstreamOptions`` refuses impossible settings with the fix in the message."""

from __future__ import annotations

from typing import Any

import pytest

from tollhouse.devupstream import DevUpstreamOptions


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"latency_ms": -1}, "latency_ms"),
        ({"chunk_delay_ms": -0.5}, "chunk_delay_ms"),
        ({"fail_status": 200}, "400-599"),
        ({"fail_every": 3}, "needs fail_status"),
        ({"fail_status": 503, "fail_every": -1}, "fail_every"),
        ({"disconnect_after_chunks": -1}, "disconnect_after_chunks"),
        ({"api_key": ""}, "api_key"),
    ],
)
def test_invalid_options(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        DevUpstreamOptions(**kwargs)


def test_defaults_and_repr_hides_the_key() -> None:
    options = DevUpstreamOptions(api_key="sk-secret")
    assert options.latency_ms == 0 and options.fail_status is None
    assert "sk-secret" not in repr(options)
