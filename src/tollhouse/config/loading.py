"""``load_settings``: defaults < config file < environment < overrides, and the settings
table of ``docs/configuration.md``, which names the same environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tollhouse.config.settings import Settings
from tollhouse.errors import ConfigError

ENV_PREFIX = "TOLLHOUSE_"
DEFAULT_CONFIG_FILE = "tollhouse.yaml"

# Environment variables the official SDKs read, and the provider entry each fills in.
_SDK_ENV: tuple[tuple[str, str, str, str], ...] = (
    # provider name, preset, key variable, base-URL variable
    ("openai", "openai", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    ("anthropic", "anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    ("openrouter", "openrouter", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL"),
)

# Mappings and lists: read from the config file only, never from one environment variable.
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
