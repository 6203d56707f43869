"""Settings: one object, built once from defaults < ``tollhouse.yaml`` < environment.

Every field has a default and help text; ``docs/configuration.md`` lists them all and
``tests/test_docs.py`` checks that the page and this package agree. Nothing below this
package reads the environment: ``Settings`` is built here and passed in.

Providers come from the config file's ``providers:`` mapping and from the environment
variables the official SDKs read (``OPENAI_API_KEY``/``OPENAI_BASE_URL``,
``ANTHROPIC_API_KEY``/``ANTHROPIC_BASE_URL``, ``OPENROUTER_API_KEY``), the way LiteLLM
does, so ``OPENAI_BASE_URL=http://127.0.0.1:9000/v1`` pointed at ``tollhouse
dev-upstream`` is a complete offline set-up.

::

    providers.py  ProviderConfig (presets, wire types), ModelRoute, PriceOverride
    settings.py   Settings: every field, its default, help text and checks
    urls.py       database URLs on their async driver, redaction, trusted_proxies entries
    loading.py    load_settings: file < environment < overrides; the docs' settings table
"""

from __future__ import annotations

from tollhouse.config.loading import (
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    load_settings,
    reference_table,
)
from tollhouse.config.providers import (
    PRESETS,
    ModelRoute,
    PriceOverride,
    ProviderConfig,
    ProviderType,
)
from tollhouse.config.settings import MIN_SECRET_LENGTH, Settings
from tollhouse.config.urls import DATABASE_SCHEMES, async_database_url, proxy_list, redact_url

__all__ = [
    "DATABASE_SCHEMES",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "MIN_SECRET_LENGTH",
    "PRESETS",
    "ModelRoute",
    "PriceOverride",
    "ProviderConfig",
    "ProviderType",
    "Settings",
    "async_database_url",
    "load_settings",
    "proxy_list",
    "redact_url",
    "reference_table",
]
