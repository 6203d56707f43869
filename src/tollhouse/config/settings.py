"""``Settings``: every field Tollhouse reads, with its default, help text and checks.

The order of the fields is the order of ``docs/configuration.md``'s table
(``reference_table``). The checks run when the object is built, so a bad value stops
every command at start, naming the setting.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from tollhouse.config.agents import AgentSettings
from tollhouse.config.dashboard import DashboardSettings
from tollhouse.config.providers import ModelRoute, PriceOverride, ProviderConfig
from tollhouse.config.sandboxes import SandboxSettings
from tollhouse.config.urls import async_database_url, proxy_list, redact_url
from tollhouse.crypto import SecretBox
from tollhouse.errors import ConfigError
from tollhouse.windows import zone

# Shortest admin key and webhook secret accepted: guessing 32 random characters is out of
# reach, and the length check catches a value cut short by quoting or a stray comma.
MIN_SECRET_LENGTH = 32


class Settings(AgentSettings, SandboxSettings, DashboardSettings):
    """Everything Tollhouse can be told. Fields map to ``TOLLHOUSE_<NAME>`` variables."""

    host: str = Field(default="127.0.0.1", description="Address `tollhouse serve` binds.")
    port: int = Field(default=4000, description="Port `tollhouse serve` binds.")
    workers: int = Field(default=1, ge=1, description="Server processes.")
    database_url: str = Field(
        default="sqlite+aiosqlite:///./tollhouse.db",
        description="SQLite (`sqlite:///PATH`, embedded) or Postgres "
        "(`postgresql://USER:PASS@HOST/DB`, `postgres://` too); run on aiosqlite and asyncpg.",
    )
    redis_url: str | None = Field(default=None, description="Redis URL for shared counters.")
    on_meter_failure: Literal["open", "closed"] = Field(
        default="closed",
        description="When Redis is unreachable, for keys and teams that do not say: "
        "closed refuses with 503, open admits on the replica's local meter.",
    )
    redis_max_connections: int = Field(
        default=64, ge=1, description="Redis connections per process (requests beyond wait)."
    )
    redis_timeout_s: float = Field(
        default=2.0, gt=0, description="Redis connect and command timeout, seconds."
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="Bearer token for /api/*, at least 32 characters. Unset: the admin API "
        "answers loopback clients only, and `serve` binds loopback only.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated IPs or networks of reverse proxies whose "
        "X-Forwarded-For/-Proto headers are believed (empty: such headers are ignored).",
    )
    ops_public: bool = Field(
        default=False,
        description="Serve /metrics and /health to anyone (false: they need the admin key, "
        "or a loopback client when none is set). /healthz and /readyz are always open.",
    )
    max_request_body_mb: float = Field(
        default=32, gt=0, description="Largest request body accepted (413 beyond), MB."
    )
    max_json_depth: int = Field(
        default=128, ge=8, le=250, description="Deepest JSON nesting accepted in a body (400)."
    )
    max_header_kb: int = Field(
        default=64, ge=8, description="Largest request line plus headers accepted (431), KB."
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Time a client has to send a request's headers."
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="Time a client has to send a request's body."
    )
    max_connections: int = Field(
        default=2048,
        ge=1,
        description="Open connections and requests per process; beyond, new requests get 503.",
    )
    admin_failures_per_minute: int = Field(
        default=20,
        ge=1,
        description="Failed admin-key or webhook-signature checks per client address per "
        "minute; beyond, that address gets 429 until the minute is over.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Keys that encrypt stored secrets (channel URLs, webhook and SMTP "
        "secrets): at least 32 characters each, comma-separated, newest first; the first "
        "encrypts, all decrypt; `legacy:<key>` keeps a short key of an older install "
        "readable.",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    log_format: Literal["json", "text"] = Field(default="json", description="Log line format.")
    access_log: bool = Field(default=False, description="Log one line per request.")
    auto_migrate: bool = Field(
        default=True, description="Apply database migrations when the server starts."
    )
    allow_anonymous: bool = Field(
        default=False,
        description="Serve requests that carry no virtual key, without governance.",
    )
    governance_poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a server looks for governance changes made elsewhere.",
    )
    credits_sweep_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="How often a server books credit grants that take effect and lots that expire.",
    )
    policy_log_allows: bool = Field(
        default=False,
        description="Write every policy decision to the decision log, allows too "
        "(denials and decisions an engine error touched are always written).",
    )
    credits_watch_gap_s: float = Field(
        default=0.25,
        gt=0,
        le=3600,
        description="Least time between two balance checks of the accounts usage was charged to "
        "(balance alerts and auto top-ups follow spending this closely).",
    )
    credits_auto_topup_retry_s: float = Field(
        default=3600.0,
        ge=0,
        description="How long auto top-up waits after a failed charge before it tries the "
        "card again (three failures in a row turn it off).",
    )
    allow_unpriced: bool = Field(
        default=False,
        description="Serve models with no known price at cost 0, flagged in usage and metrics.",
    )
    default_max_output_tokens: int = Field(
        default=4096,
        ge=1,
        description="Output cap assumed when neither the request nor the catalog gives one.",
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, description="Upstream connect timeout.")
    request_timeout_s: float = Field(
        default=600.0, gt=0, description="Upstream timeout for a whole response."
    )
    max_retries: int = Field(
        default=2, ge=0, description="Retries per target on connect errors, 429 and 5xx."
    )
    retry_backoff_s: float = Field(
        default=0.25, ge=0, description="First retry delay; doubles per retry, with jitter."
    )
    retry_backoff_max_s: float = Field(default=8.0, ge=0, description="Longest retry delay.")
    upstream_pool_size: int = Field(
        default=512, ge=1, description="Pooled upstream connections per provider."
    )
    database_pool_size: int = Field(
        default=10, ge=1, description="Postgres: connections kept open per process."
    )
    database_max_overflow: int = Field(
        default=20, ge=0, description="Postgres: extra connections opened under load."
    )
    database_pool_timeout_s: float = Field(
        default=5.0, gt=0, description="Postgres: wait for a free pooled connection, seconds."
    )
    database_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Postgres: connect timeout, seconds."
    )
    database_statement_timeout_ms: int = Field(
        default=10_000, ge=0, description="Postgres: statement_timeout (0: none)."
    )
    inbound_webhook_secret: SecretStr | None = Field(
        default=None,
        description="HMAC secret that signs POST /api/webhooks/budget (unset: endpoint off).",
    )
    alert_dispatch_in_process: bool = Field(
        default=True,
        description="Send alert deliveries from the gateway process (false: only from "
        "`tollhouse worker`).",
    )
    alert_max_attempts: int = Field(
        default=6, ge=1, description="Attempts per alert delivery before it is marked failed."
    )
    alert_retry_base_s: float = Field(
        default=2.0, ge=0, description="Alert retry backoff: first cap, doubled each attempt."
    )
    alert_retry_max_s: float = Field(
        default=300.0, ge=0, description="Alert retry backoff: largest wait, seconds."
    )
    alert_send_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one alert send (HTTP or SMTP), seconds."
    )
    alert_poll_interval_s: float = Field(
        default=1.0, gt=0, description="How often the dispatcher looks for due deliveries."
    )
    durability: Literal["batched", "strict"] = Field(
        default="batched",
        description="batched: records are written every ledger_flush_interval_ms "
        "(SIGKILL loses at most that much); strict: a response ends only once its record "
        "is in the ledger or spooled to disk.",
    )
    spool_dir: str = Field(
        default="tollhouse-spool",
        description="Directory (relative to the working directory) where usage records "
        "wait on disk while the database is unavailable.",
    )
    ledger_batch_size: int = Field(
        default=500, ge=1, description="Usage records written per database round trip."
    )
    ledger_flush_interval_ms: int = Field(
        default=20, ge=1, description="Longest a usage record waits before it is written."
    )
    shutdown_timeout_s: float = Field(
        default=30.0, ge=0, description="How long SIGTERM waits for in-flight requests."
    )
    stripe_secret_key: SecretStr | None = Field(
        default=None,
        description="Stripe secret or restricted API key (`sk_…`, `rk_…`) that creates "
        "top-up Checkout Sessions and auto top-up charges (unset: Stripe top-ups off); "
        "never logged.",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Signing secret (`whsec_…`) of the Stripe webhook endpoint that calls "
        "POST /api/webhooks/stripe (unset: endpoint off); never logged.",
    )
    stripe_api_base: str | None = Field(
        default=None,
        description="Stripe API base URL (unset: Stripe's own); tests point it at a local "
        "stand-in.",
    )
    stripe_success_url: str | None = Field(
        default=None,
        description="Where Stripe Checkout sends a payer after a top-up; "
        "`{CHECKOUT_SESSION_ID}` in it is filled in by Stripe. Needed for Checkout top-ups.",
    )
    stripe_cancel_url: str | None = Field(
        default=None,
        description="Where Stripe Checkout sends a payer who goes back without paying "
        "(unset: no back link).",
    )
    stripe_product_name: str = Field(
        default="Prepaid credits",
        min_length=1,
        max_length=250,
        description="The line item's name a payer sees on the Checkout page and receipt.",
    )
    stripe_timeout_s: float = Field(
        default=30.0, gt=0, description="Timeout of one Stripe API call, seconds."
    )
    stripe_max_network_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a Stripe API call after a network error or a 409/5xx, "
        "with the same idempotency key.",
    )
    policy_opa_url: str | None = Field(
        default=None,
        description="Base URL of an external OPA for policies of engine `opa` "
        "(`POST <url>/v1/data/<path>`; unset: that engine is off).",
    )
    policy_time_zone: str = Field(
        default="UTC",
        description="IANA time zone of the `time` a policy condition reads "
        "(hour, weekday, date; `time.now` carries its offset).",
    )
    policy_opa_timeout_ms: int = Field(
        default=200,
        ge=1,
        le=10000,
        description="Timeout of one OPA decision, milliseconds; past it the policy's "
        "fail_mode decides.",
    )
    providers: dict[str, ProviderConfig] = Field(
        default_factory=dict, description="Upstreams by name (also from SDK env variables)."
    )
    models: list[ModelRoute] = Field(
        default_factory=list, description="Model names with their fallback chains."
    )
    pricing: dict[str, PriceOverride] = Field(
        default_factory=dict, description="Price overrides keyed `provider/model`."
    )

    @field_validator("admin_key", "viewer_key", "inbound_webhook_secret", "secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        # An empty value is a mistake (``TOLLHOUSE_ADMIN_KEY=`` in a compose file), never
        # "no key": for the admin key it would open the admin API to an empty bearer token.
        if value is None:
            return None
        secret = value.get_secret_value()
        if info.field_name != "secret_key" and len(secret) < MIN_SECRET_LENGTH:
            shown = "empty" if not secret else f"{len(secret)} characters"
            raise ValueError(
                f"is {shown}; unset it, or use at least {MIN_SECRET_LENGTH} random characters "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        if not secret.strip():
            raise ValueError("is empty; unset it or set a value")
        if info.field_name == "secret_key":
            # The rules of the keys (length, order of legacy keys) live with the box;
            # checked here too so that every command refuses them at start.
            try:
                SecretBox.from_setting(secret)
            except ConfigError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("stripe_secret_key", "stripe_webhook_secret")
    @classmethod
    def _stripe_secret_shape(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        # A publishable key (pk_…) pasted as the secret key, or an empty value, is a
        # mistake caught at start; the value itself is never part of the message.
        if value is None:
            return None
        prefixes = ("sk_", "rk_") if info.field_name == "stripe_secret_key" else ("whsec_",)
        secret = value.get_secret_value()
        if not secret.startswith(prefixes) or secret != secret.strip():
            raise ValueError(
                f"must start with {' or '.join(prefixes)} and hold no spaces; "
                "copy it from the Stripe Dashboard (Developers)"
            )
        return value

    @field_validator("stripe_api_base", "stripe_success_url", "stripe_cancel_url", "policy_opa_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("policy_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)  # a ValueError naming the zone, made a ConfigError naming the setting
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return async_database_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        """Checked here, so that a typo is a ``ConfigError`` naming the setting before
        anything starts, not a connection error from the first request."""
        try:
            from redis.asyncio.connection import parse_url  # the optional redis extra
        except ImportError:  # refused when the app starts, naming the extra
            return value
        if value is not None:
            try:
                parse_url(value)
            except ValueError as exc:
                raise ValueError(f"{redact_url(value)!r}: {exc}") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in proxy_list(value):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not an IP address or network") from None
        return value

    @model_validator(mode="after")
    def _viewer_key(self) -> Settings:
        # A read-only login is only read-only if something else is required to write: with
        # no admin key, loopback callers are the admin, and a viewer key would change nothing.
        if self.viewer_key is None:
            return self
        if self.admin_key is None:
            raise ValueError("viewer_key needs admin_key: set an admin key too, or unset it")
        if self.viewer_key.get_secret_value() == self.admin_key.get_secret_value():
            raise ValueError("viewer_key must differ from admin_key")
        return self

    @property
    def max_request_body_bytes(self) -> int:
        return int(self.max_request_body_mb * 1024 * 1024)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def __repr_args__(self) -> Any:
        # Database and Redis URLs may embed passwords.
        for name, value in super().__repr_args__():
            if name in ("database_url", "redis_url") and isinstance(value, str):
                value = redact_url(value)
            yield name, value
