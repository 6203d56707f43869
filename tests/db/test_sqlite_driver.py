"""The SQLite engine needs aiosqlite to run a function in its connection's thread (the
session log's one-hop transactions, ``agents/rawlog.py``): one that cannot is refused
when the engine is made, naming the fix, instead of failing at the first message."""

from __future__ import annotations

import aiosqlite
import pytest

from tollhouse.db import create_engine
from tollhouse.errors import ConfigError


def test_an_aiosqlite_that_cannot_run_functions_is_refused(make_settings, monkeypatch):
    monkeypatch.delattr(aiosqlite.Connection, "_execute")
    with pytest.raises(ConfigError) as refused:
        create_engine(make_settings())
    assert "aiosqlite>=0.20,<1" in refused.value.message
