"""Options several commands share, and turning them into ``Settings``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from tollhouse.config import Settings, load_settings
from tollhouse.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Settings file (default: ./tollhouse.yaml when present, or $TOLLHOUSE_CONFIG).",
    )(func)


def settings_from(config_file: str | None, **overrides: Any) -> Settings:
    """Settings for a command, turning configuration errors into a clean exit."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return load_settings(config_file, **given)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
