"""Database: one async engine per process, SQLite (embedded) or Postgres, and migrations."""

from __future__ import annotations

from tollhouse.db.engine import create_engine, insert_ignoring, ping
from tollhouse.db.meta import metadata

__all__ = ["create_engine", "insert_ignoring", "metadata", "ping"]
