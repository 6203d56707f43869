"""Alembic environment: runs on the connection Tollhouse hands it (async engines included)."""

from __future__ import annotations

from alembic import context

from tollhouse.db.meta import metadata
from tollhouse.db.schema import import_all_models

import_all_models()
connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs `alembic` by hand
    raise RuntimeError("run migrations with `tollhouse db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
