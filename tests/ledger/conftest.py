"""Ledger fixtures: a record factory. The databases are in ``tests/conftest.py``: every
test that uses ``engine`` runs on SQLite, then on Postgres."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from tests.ledger.records import T0, usage_record

from tollhouse.ledger import UsageRecord

RecordFactory = Callable[..., UsageRecord]


@pytest.fixture
def make_record() -> RecordFactory:
    """``make_record(**fields)``: records with unique ids a second apart, from T0 on."""
    counter = itertools.count()

    def factory(**fields: Any) -> UsageRecord:
        n = next(counter)
        fields.setdefault("id", f"req_{n:06d}")
        fields.setdefault("created_at", T0 + timedelta(seconds=n))
        return usage_record(**fields)

    return factory
