"""The admin dashboard's settings (docs/dashboard.md), a part of ``Settings``."""

from __future__ import annotations

from pydantic import Field, SecretStr

from tollhouse.config.providers import _Frozen


class DashboardSettings(_Frozen):
    dashboard_enabled: bool = Field(
        default=True,
        description="Serve the admin dashboard at /ui (false: /ui answers 404).",
    )
    viewer_key: SecretStr | None = Field(
        default=None,
        description="A read-only credential for the dashboard, at least 32 characters and "
        "different from the admin key, which it needs: who logs in with it sees every page "
        "and can change nothing.",
    )
    dashboard_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 30,
        description="How long a dashboard login lasts. Changing the admin or viewer key "
        "ends every session at once.",
    )
    dashboard_tail_interval_s: float = Field(
        default=5.0,
        ge=1,
        le=300,
        description="How often the request log's live tail asks for new records (one "
        "request per refresh, whatever the page shows).",
    )
    dashboard_query_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Postgres: how long a request-log page may search before the page "
        "asks for narrower filters instead (filters no index serves, such as cost, "
        "read the whole ledger when nothing recent matches).",
    )
