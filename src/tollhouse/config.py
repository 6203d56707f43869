"""Settings: one object, built once from defaults < ``tollhouse.yaml`` < environment.

Every field has a default and help text; ``docs/configuration.md`` lists them all and
``tests/test_docs.py`` checks that the page and this module agree. Nothing below this
module reads the environment: ``Settings`` is built here and passed in.

Providers come from the config file's ``providers:`` mapping and from the environment
variables the official SDKs read (``OPENAI_API_KEY``/``OPENAI_BASE_URL``,
``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL``, ``OPENROUTER_API_KEY``), the way LiteLLM
does, so ``OPENAI_BASE_URL=http://127.0.0.1:9000/v1`` pointed at ``tollhouse
dev-upstream`` is a complete offline set-up.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tollhouse.crypto import SecretBox
from tollhouse.errors import ConfigError

ENV_PREFIX = "TOLLHOUSE_"
DEFAULT_CONFIG_FILE = "tollhouse.yaml"

ProviderType = Literal["openai", "anthropic"]

# Shortest admin key and webhook secret accepted: guessing 32 random characters is out of
# reach, and the length check catches a value cut short by quoting or a stray comma.
MIN_SECRET_LENGTH = 32

# Base URLs of the presets a provider entry may name instead of spelling its URL out.
PRESETS: dict[str, tuple[ProviderType, str]] = {
    "openai": ("openai", "https://api.openai.com/v1"),
    "anthropic": ("anthropic", "https://api.anthropic.com"),
    "openrouter": ("openai", "https://openrouter.ai/api/v1"),
    "vllm": ("openai", "http://127.0.0.1:8000/v1"),
    "ollama": ("openai", "http://127.0.0.1:11434/v1"),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProviderConfig(_Frozen):
    """One upstream: an OpenAI-compatible base URL or the Anthropic Messages API."""

    preset: str | None = Field(
        default=None, description="One of openai, anthropic, openrouter, vllm, ollama."
    )
    type: ProviderType | None = Field(
        default=None, description="Wire format; taken from the preset when omitted."
    )
    base_url: str | None = Field(default=None, description="Overrides the preset's URL.")
    api_key: SecretStr | None = Field(default=None, description="Sent upstream; never logged.")
    pricing_provider: str | None = Field(
        default=None,
        description="Catalog provider whose prices apply (defaults to the preset's name).",
    )
    allow_unpriced: bool = Field(
        default=False, description="Serve models of this provider that have no price, at cost 0."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra upstream headers.")
    region: str = Field(
        default="",
        max_length=64,
        description="Where the provider serves from (eu, us-east…): policies read it.",
    )

    @property
    def resolved_type(self) -> ProviderType:
        if self.type is not None:
            return self.type
        if self.preset is not None:
            return PRESETS[self.preset][0]
        return "openai"

    @property
    def resolved_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.preset is not None:
            return PRESETS[self.preset][1]
        raise ConfigError("a provider needs a base_url or a preset")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known: {', '.join(sorted(PRESETS))}")
        return value

    @model_validator(mode="after")
    def _has_an_address(self) -> ProviderConfig:
        if not self.base_url and self.preset is None:
            raise ValueError("a provider needs a base_url or a preset")
        return self

    def __repr_args__(self) -> Any:
        # Header values often carry credentials (``api-key``, ``x-goog-api-key``).
        for name, value in super().__repr_args__():
            yield name, ({k: "**********" for k in value} if name == "headers" else value)


class ModelRoute(_Frozen):
    """A model name clients may ask for, and the provider models that serve it in order."""

    name: str = Field(description="The name clients send as `model`.")
    targets: list[str] = Field(
        min_length=1,
        description="`provider/model` entries tried in order: the fallback chain.",
    )


class PriceOverride(_Frozen):
    """Operator price for one `provider/model`, USD per 1M tokens."""

    input: Decimal
    output: Decimal = Decimal(0)
    cached_input: Decimal | None = None
    cache_write_input: Decimal | None = None
    max_output_tokens: int | None = None


class Settings(_Frozen):
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

    @field_validator("admin_key", "inbound_webhook_secret", "secret_key")
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


# Environment variables the official SDKs read, and the provider entry each fills in.
_SDK_ENV: tuple[tuple[str, str, str, str], ...] = (
    # provider name, preset, key variable, base-URL variable
    ("openai", "openai", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    ("anthropic", "anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    ("openrouter", "openrouter", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL"),
)

_COMPOUND_FIELDS = {"providers", "models", "pricing"}


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build ``Settings`` from defaults < config file < environment < ``overrides``.

    ``config_file`` defaults to ``./tollhouse.yaml`` when that file exists (or
    ``TOLLHOUSE_CONFIG``). ``env`` defaults to ``os.environ``; tests pass their own.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = Path(config_file) if config_file else _default_config_path(env)
    if path is not None:
        data.update(_read_yaml(path))
    for name in Settings.model_fields:
        value = env.get(ENV_PREFIX + name.upper())
        if value is None or name in _COMPOUND_FIELDS:
            continue
        data[name] = value
    data["providers"] = _with_sdk_providers(data.get("providers") or {}, env)
    data.update(overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


# The database URL schemes accepted (the async forms and the plain ones other tools and
# hosting platforms write) and the async driver each one runs on.
DATABASE_SCHEMES: dict[str, str] = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def async_database_url(url: str) -> str:
    """``url`` on its async driver: the one place a database URL's scheme is read.

    ``sqlite:///tollhouse.db`` -> ``sqlite+aiosqlite:///tollhouse.db`` (relative to the
    working directory; ``sqlite:////var/lib/x.db`` is absolute),
    ``postgres://u:p@db/x`` -> ``postgresql+asyncpg://u:p@db/x``; the async forms are
    returned unchanged. Any other scheme raises ``ValueError`` naming the accepted ones
    (``Settings`` turns it into a ``ConfigError`` at start-up), with the password hidden.
    """
    scheme, sep, rest = url.partition("://")
    driver = DATABASE_SCHEMES.get(scheme.lower()) if sep else None
    if driver is None:
        accepted = ", ".join(f"{name}://" for name in DATABASE_SCHEMES)
        raise ValueError(
            f"unsupported database_url {redact_url(url)!r}: accepted schemes are {accepted} "
            "(sqlite:///PATH or postgresql://USER:PASS@HOST/DB)"
        )
    return f"{driver}://{rest}"


def proxy_list(value: str) -> list[str]:
    """The entries of ``trusted_proxies``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def redact_url(url: str) -> str:
    """``url`` with any password replaced: ``postgresql://u:***@host/db``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def _default_config_path(env: Mapping[str, str]) -> Path | None:
    named = env.get(ENV_PREFIX + "CONFIG")
    if named:
        return Path(named)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return loaded


def _with_sdk_providers(providers: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Fill in providers from SDK variables; the config file's own values win."""
    merged: dict[str, Any] = {name: dict(entry or {}) for name, entry in providers.items()}
    for name, preset, key_var, url_var in _SDK_ENV:
        key, url = env.get(key_var), env.get(url_var)
        if not key and not url:
            continue
        entry = merged.setdefault(name, {"preset": preset})
        if key and not entry.get("api_key"):
            entry["api_key"] = key
        if url and not entry.get("base_url"):
            entry["base_url"] = url
    return merged


def _describe(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
        for err in exc.errors()
    ]
    return "invalid settings: " + "; ".join(problems)


def reference_table() -> str:
    """The settings table of ``docs/configuration.md``, generated from ``Settings``.

    ``tests/test_docs.py`` fails when the page and this table differ; regenerate with
    ``python -c "from tollhouse.config import reference_table; print(reference_table())"``.
    """
    lines = ["| setting | environment | default | description |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None else f"`{_plain(default)}`"
        env = "(file only)" if name in _COMPOUND_FIELDS else f"`{ENV_PREFIX}{name.upper()}`"
        lines.append(f"| `{name}` | {env} | {shown} | {field.description} |")
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list) and not value:
        return "{}" if isinstance(value, dict) else "[]"
    return str(value)
