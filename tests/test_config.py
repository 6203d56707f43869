"""Settings: defaults < config file < TOLLHOUSE_* environment < overrides; SDK variables."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tollhouse.config import PRESETS, ProviderConfig, Settings, load_settings
from tollhouse.errors import ConfigError


@pytest.fixture
def config_file(tmp_path: Path):
    """``config_file(text)`` writes a YAML file and returns its path."""

    def write(text: str) -> Path:
        path = tmp_path / "tollhouse.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(tmp_path: Path):
    """``load_settings`` isolated from the process environment and the working directory.

    With no file given it reads an empty one, so a ./tollhouse.yaml can never leak in.
    """
    empty = tmp_path / "empty.yaml"
    empty.write_text("")

    def _load(config: Path | None = None, env: dict[str, str] | None = None, **overrides):
        return load_settings(config or empty, env=env or {}, **overrides)

    return _load


# --- precedence -----------------------------------------------------------------------


def test_defaults_when_nothing_is_given(load):
    settings = load()
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 4000
    assert settings.database_url == "sqlite+aiosqlite:///./tollhouse.db"
    assert settings.is_sqlite
    assert settings.providers == {}
    assert settings.admin_key is None


def test_every_field_has_a_default_and_help_text():
    for name, field in Settings.model_fields.items():
        assert not field.is_required(), name
        assert field.description, name


def test_file_beats_defaults(config_file, load):
    path = config_file("port: 5000\nlog_level: debug\nallow_unpriced: true\n")
    settings = load(path)
    assert (settings.port, settings.log_level, settings.allow_unpriced) == (5000, "debug", True)
    assert settings.host == "127.0.0.1"  # untouched default


def test_env_beats_file(config_file, load):
    path = config_file("port: 5000\nhost: 127.0.0.2\n")
    settings = load(path, env={"TOLLHOUSE_PORT": "6000"})
    assert settings.port == 6000
    assert settings.host == "127.0.0.2"


def test_overrides_beat_env_and_file(config_file, load):
    path = config_file("port: 5000\n")
    settings = load(path, env={"TOLLHOUSE_PORT": "6000"}, port=7000)
    assert settings.port == 7000


def test_tollhouse_config_env_names_the_file(config_file):
    path = config_file("port: 5123\n")
    settings = load_settings(env={"TOLLHOUSE_CONFIG": str(path)})
    assert settings.port == 5123


def test_tollhouse_yaml_in_the_working_directory_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={}).port == 4000  # no file: defaults
    (tmp_path / "tollhouse.yaml").write_text("port: 5555\n")
    assert load_settings(env={}).port == 5555


def test_explicit_file_beats_tollhouse_config_env(tmp_path, config_file):
    path = config_file("port: 5123\n")
    other = tmp_path / "other.yaml"
    other.write_text("port: 9999\n")
    assert load_settings(path, env={"TOLLHOUSE_CONFIG": str(other)}).port == 5123


def test_env_values_are_coerced(load):
    settings = load(
        env={
            "TOLLHOUSE_WORKERS": "3",
            "TOLLHOUSE_ALLOW_UNPRICED": "true",
            "TOLLHOUSE_AUTO_MIGRATE": "false",
            "TOLLHOUSE_RETRY_BACKOFF_S": "0.5",
            "TOLLHOUSE_LOG_FORMAT": "text",
            "TOLLHOUSE_REDIS_URL": "redis://127.0.0.1:6379/0",
        }
    )
    assert settings.workers == 3
    assert settings.allow_unpriced is True
    assert settings.auto_migrate is False
    assert settings.retry_backoff_s == 0.5
    assert settings.log_format == "text"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"


def test_compound_fields_are_not_read_from_env(load):
    settings = load(env={"TOLLHOUSE_PROVIDERS": "{'x': 1}", "TOLLHOUSE_MODELS": "nonsense"})
    assert settings.providers == {}
    assert settings.models == []


def test_unrelated_env_is_ignored(load):
    assert load(env={"TOLLHOUSE_NOT_A_SETTING": "1", "PORT": "1"}) == Settings()


def test_empty_file_gives_defaults(config_file, load):
    assert load(config_file("")) == Settings()
    assert load(config_file("# only a comment\n")) == Settings()


def test_settings_are_frozen(load):
    settings = load()
    with pytest.raises(ValueError):
        settings.port = 1  # type: ignore[misc]


# --- SDK environment variables ----------------------------------------------------------


def test_openai_sdk_env_creates_a_provider(load):
    settings = load(
        env={"OPENAI_API_KEY": "sk-openai", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1/"}
    )
    provider = settings.providers["openai"]
    assert provider.preset == "openai"
    assert provider.resolved_type == "openai"
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-openai"
    assert provider.resolved_base_url == "http://127.0.0.1:9/v1"  # trailing slash dropped


def test_openai_key_alone_uses_the_preset_url(load):
    provider = load(env={"OPENAI_API_KEY": "sk-openai"}).providers["openai"]
    assert provider.resolved_base_url == "https://api.openai.com/v1"


def test_base_url_alone_creates_a_keyless_provider(load):
    provider = load(env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}).providers["openai"]
    assert provider.api_key is None
    assert provider.resolved_base_url == "http://127.0.0.1:9/v1"


def test_anthropic_sdk_env_creates_a_provider(load):
    settings = load(env={"ANTHROPIC_API_KEY": "sk-ant", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"})
    provider = settings.providers["anthropic"]
    assert provider.resolved_type == "anthropic"
    assert provider.resolved_base_url == "http://127.0.0.1:9"
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-ant"
    assert set(settings.providers) == {"anthropic"}


def test_openrouter_key_creates_an_openai_format_provider(load):
    provider = load(env={"OPENROUTER_API_KEY": "sk-or"}).providers["openrouter"]
    assert provider.resolved_type == "openai"
    assert provider.resolved_base_url == "https://openrouter.ai/api/v1"
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-or"


def test_no_sdk_env_means_no_providers(load):
    assert load(env={"OPENAI_API_KEY": "", "ANTHROPIC_BASE_URL": ""}).providers == {}


def test_file_provider_values_win_over_sdk_env(config_file, load):
    path = config_file(
        "providers:\n"
        "  openai:\n"
        "    preset: openai\n"
        "    base_url: http://file.example/v1\n"
        "    api_key: sk-from-file\n"
    )
    env = {"OPENAI_API_KEY": "sk-from-env", "OPENAI_BASE_URL": "http://env.example/v1"}
    provider = load(path, env=env).providers["openai"]
    assert provider.resolved_base_url == "http://file.example/v1"
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-from-file"


def test_sdk_env_fills_what_the_file_leaves_out(config_file, load):
    path = config_file("providers:\n  openai:\n    base_url: http://file.example/v1\n")
    provider = load(path, env={"OPENAI_API_KEY": "sk-from-env"}).providers["openai"]
    assert provider.resolved_base_url == "http://file.example/v1"
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-from-env"


def test_file_providers_and_sdk_providers_combine(config_file, load):
    path = config_file("providers:\n  local:\n    preset: ollama\n")
    settings = load(path, env={"ANTHROPIC_API_KEY": "sk-ant"})
    assert set(settings.providers) == {"local", "anthropic"}


def test_providers_override_replaces_sdk_providers(load):
    settings = load(
        env={"OPENAI_API_KEY": "sk"}, providers={"local": {"base_url": "http://127.0.0.1:1/v1"}}
    )
    assert set(settings.providers) == {"local"}


# --- presets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "kind", "url"),
    [
        ("openai", "openai", "https://api.openai.com/v1"),
        ("anthropic", "anthropic", "https://api.anthropic.com"),
        ("openrouter", "openai", "https://openrouter.ai/api/v1"),
        ("vllm", "openai", "http://127.0.0.1:8000/v1"),
        ("ollama", "openai", "http://127.0.0.1:11434/v1"),
    ],
)
def test_presets(preset, kind, url, load):
    provider = load(providers={"p": {"preset": preset}}).providers["p"]
    assert provider.resolved_type == kind
    assert provider.resolved_base_url == url
    assert set(PRESETS) == {"openai", "anthropic", "openrouter", "vllm", "ollama"}


def test_preset_url_and_type_can_be_overridden():
    provider = ProviderConfig(preset="anthropic", base_url="http://127.0.0.1:1", type="openai")
    assert provider.resolved_base_url == "http://127.0.0.1:1"
    assert provider.resolved_type == "openai"


def test_provider_without_preset_or_type_speaks_openai():
    assert ProviderConfig(base_url="http://127.0.0.1:1/v1").resolved_type == "openai"


def test_unknown_preset_is_a_config_error_naming_the_field(load):
    with pytest.raises(ConfigError) as info:
        load(providers={"mine": {"preset": "bedrock"}})
    message = info.value.message
    assert "providers.mine.preset" in message
    assert "bedrock" in message
    assert "ollama" in message  # the known presets are listed


def test_provider_with_neither_base_url_nor_preset_is_refused_when_loading(load):
    # It would only fail later, inside the server's startup, with a message that does not
    # say which provider is wrong.
    with pytest.raises(ConfigError) as info:
        load(providers={"local": {"api_key": "sk-x"}})
    assert "local" in info.value.message
    assert "base_url" in info.value.message


# --- invalid values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"TOLLHOUSE_PORT": "eighty"}, "port"),
        ({"TOLLHOUSE_WORKERS": "0"}, "workers"),
        ({"TOLLHOUSE_LOG_FORMAT": "xml"}, "log_format"),
        ({"TOLLHOUSE_MAX_RETRIES": "-1"}, "max_retries"),
        ({"TOLLHOUSE_CONNECT_TIMEOUT_S": "0"}, "connect_timeout_s"),
        ({"TOLLHOUSE_LEDGER_BATCH_SIZE": "0"}, "ledger_batch_size"),
        ({"TOLLHOUSE_ALLOW_UNPRICED": "perhaps"}, "allow_unpriced"),
        ({"TOLLHOUSE_DEFAULT_MAX_OUTPUT_TOKENS": "0"}, "default_max_output_tokens"),
    ],
)
def test_invalid_env_value_names_the_field(env, field, load):
    with pytest.raises(ConfigError) as info:
        load(env=env)
    assert info.value.message.startswith("invalid settings: ")
    assert f"{field}:" in info.value.message


def test_invalid_file_values_name_nested_fields(config_file, load):
    path = config_file(
        "providers:\n"
        "  local:\n"
        "    base_url: http://127.0.0.1:1/v1\n"
        "    type: grpc\n"
        "models:\n"
        "  - name: smart\n"
        "    targets: []\n"
        "pricing:\n"
        "  local/x: {input: lots}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(path)
    message = info.value.message
    assert "providers.local.type" in message
    assert "models.0.targets" in message
    assert "pricing.local/x.input" in message


def test_unknown_setting_is_refused(config_file, load):
    with pytest.raises(ConfigError) as info:
        load(config_file("prot: 4000\n"))
    assert "prot" in info.value.message


def test_invalid_override_is_a_config_error(load):
    with pytest.raises(ConfigError) as info:
        load(workers=0)
    assert "workers" in info.value.message


def test_config_error_is_not_a_pydantic_error(load):
    # Callers (the CLI) catch ConfigError only; a raw ValidationError would be a traceback.
    with pytest.raises(ConfigError) as info:
        load(env={"TOLLHOUSE_PORT": "x"})
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# --- files ------------------------------------------------------------------------------


def test_bad_yaml_is_a_config_error(config_file, load):
    path = config_file("port: [4000\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "not valid YAML" in info.value.message
    assert str(path) in info.value.message


def test_yaml_that_is_not_a_mapping_is_a_config_error(config_file, load):
    with pytest.raises(ConfigError) as info:
        load(config_file("- port\n- 4000\n"))
    assert "mapping" in info.value.message


def test_missing_config_file_is_a_config_error(tmp_path, load):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load(missing)
    assert str(missing) in info.value.message
    assert "cannot read" in info.value.message


def test_missing_file_named_by_tollhouse_config_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(env={"TOLLHOUSE_CONFIG": str(missing)})
    assert str(missing) in info.value.message


def test_yaml_float_prices_stay_exact(config_file, load):
    path = config_file(
        "pricing:\n"
        "  openai/gpt-4o-mini: {input: 0.15, output: 0.6, cached_input: '0.075'}\n"
        "  local/x: {input: 0.1, output: 0.3}\n"
    )
    pricing = load(path).pricing
    assert pricing["openai/gpt-4o-mini"].input == Decimal("0.15")
    assert pricing["openai/gpt-4o-mini"].output == Decimal("0.6")
    assert pricing["openai/gpt-4o-mini"].cached_input == Decimal("0.075")
    assert pricing["local/x"].input == Decimal("0.1")
    assert pricing["local/x"].output == Decimal("0.3")


def test_models_routes_from_file(config_file, load):
    path = config_file(
        "models:\n  - name: smart\n    targets: [openai/gpt-4o, anthropic/claude-sonnet-4-5]\n"
    )
    (route,) = load(path).models
    assert route.name == "smart"
    assert route.targets == ["openai/gpt-4o", "anthropic/claude-sonnet-4-5"]


# --- secrets --------------------------------------------------------------------------

SECRETS = (
    "sk-openai-SECRET",
    "sk-ant-SECRET",
    "admin-SECRET-0123456789abcdefghijklmnop",
    "fernet-SECRET-0123456789abcdefghijklmnop",
)


def _secret_settings(config_file, load) -> Settings:
    path = config_file(
        "admin_key: admin-SECRET-0123456789abcdefghijklmnop\n"
        "secret_key: fernet-SECRET-0123456789abcdefghijklmnop\n"
        "providers:\n"
        "  local:\n"
        "    base_url: http://127.0.0.1:1/v1\n"
        "    api_key: sk-local-SECRET\n"
    )
    env = {"OPENAI_API_KEY": "sk-openai-SECRET", "ANTHROPIC_API_KEY": "sk-ant-SECRET"}
    return load(path, env=env)


def test_secrets_never_in_repr_or_str(config_file, load):
    settings = _secret_settings(config_file, load)
    shown = [repr(settings), str(settings), f"{settings}", settings.model_dump_json()]
    for provider in settings.providers.values():
        shown += [repr(provider), str(provider), provider.model_dump_json()]
    for text in shown:
        for secret in (*SECRETS, "sk-local-SECRET"):
            assert secret not in text
    # ... while still usable by the code that needs them.
    assert settings.admin_key is not None
    assert settings.admin_key.get_secret_value() == "admin-SECRET-0123456789abcdefghijklmnop"
    assert settings.providers["local"].api_key is not None
    assert settings.providers["local"].api_key.get_secret_value() == "sk-local-SECRET"


def test_secret_not_echoed_in_config_errors(config_file, load):
    path = config_file("admin_key: admin-SECRET-0123456789abcdefghijklmnop\nport: nope\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "admin-SECRET-0123456789abcdefghijklmnop" not in str(info.value)


def test_database_password_never_in_repr_or_str(load):
    url = "postgresql+asyncpg://tollhouse:db-pass-SECRET@127.0.0.1:5432/tollhouse"
    settings = load(database_url=url, redis_url="redis://:redis-pass-SECRET@127.0.0.1:6379/0")
    for text in (repr(settings), str(settings)):
        assert "db-pass-SECRET" not in text
        assert "redis-pass-SECRET" not in text
    assert settings.database_url == url  # still usable


# --- database URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite:////var/lib/tollhouse/x.db", "sqlite+aiosqlite:////var/lib/tollhouse/x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:p@db:5432/t", "postgresql+asyncpg://u:p@db:5432/t"),
        ("postgres://u:p@db/t?sslmode=require", "postgresql+asyncpg://u:p@db/t?sslmode=require"),
        ("POSTGRES://u@db/t", "postgresql+asyncpg://u@db/t"),
        ("postgresql+asyncpg://u@db/t", "postgresql+asyncpg://u@db/t"),
    ],
)
def test_plain_database_urls_run_on_the_async_drivers(load, given, used):
    assert load(env={"TOLLHOUSE_DATABASE_URL": given}).database_url == used
    assert load(database_url=given).database_url == used


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:db-pass-SECRET@db/t",
        "postgresql+psycopg2://u:db-pass-SECRET@db/t",
        "sqlite+pysqlite:///x.db",
        "tollhouse.db",
        "",
    ],
)
def test_other_database_urls_are_refused_naming_the_accepted_ones(config_file, load, url):
    with pytest.raises(ConfigError) as info:
        load(config_file(f"database_url: '{url}'\n"))
    message = str(info.value)
    assert "unsupported database_url" in message
    for scheme in ("sqlite://", "sqlite+aiosqlite://", "postgresql://", "postgres://"):
        assert scheme in message
    assert "postgresql+asyncpg://" in message
    assert "db-pass-SECRET" not in message


def test_credential_headers_never_in_repr_or_str(load):
    # Azure OpenAI and some gateways take the key in a header (`api-key`).
    settings = load(
        providers={
            "azure": {"base_url": "http://127.0.0.1:1/v1", "headers": {"api-key": "az-SECRET"}}
        }
    )
    provider = settings.providers["azure"]
    for text in (repr(settings), str(settings), repr(provider), str(provider)):
        assert "az-SECRET" not in text


# --- safe defaults for secrets -------------------------------------------------------------


@pytest.mark.parametrize("name", ["TOLLHOUSE_ADMIN_KEY", "TOLLHOUSE_INBOUND_WEBHOOK_SECRET"])
@pytest.mark.parametrize("value", ["", " ", "short", "x" * 31])
def test_an_empty_or_short_admin_key_or_webhook_secret_is_an_error(load, name, value):
    with pytest.raises(ConfigError) as info:
        load(env={name: value})
    message = str(info.value)
    assert "at least 32" in message or "empty" in message
    assert value.strip() == "" or value not in message


def test_an_empty_secret_key_is_an_error(load):
    with pytest.raises(ConfigError, match="secret_key"):
        load(env={"TOLLHOUSE_SECRET_KEY": ""})


def test_a_32_character_admin_key_is_accepted(load):
    settings = load(env={"TOLLHOUSE_ADMIN_KEY": "k" * 32})
    assert settings.admin_key is not None


@pytest.mark.parametrize("value", ["10.0.0.1", "10.0.0.0/8, 192.168.1.1", "::1", ""])
def test_trusted_proxies_take_addresses_and_networks(load, value):
    assert load(env={"TOLLHOUSE_TRUSTED_PROXIES": value}).trusted_proxies == value


def test_trusted_proxies_refuse_what_is_not_an_address(load):
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load(env={"TOLLHOUSE_TRUSTED_PROXIES": "10.0.0.1, proxy.example"})


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:6379", "schemes"),
        ("redis://:pw-SECRET@h:99999/0", "Port out of range"),
        ("redis://[", "IPv6"),
    ],
)
def test_a_malformed_redis_url_is_a_config_error_naming_it(load, url, says):
    with pytest.raises(ConfigError) as info:
        load(redis_url=url)
    assert "redis_url" in str(info.value) and says in str(info.value)
    assert "pw-SECRET" not in str(info.value)
