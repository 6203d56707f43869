"""``tollhouse serve`` refuses settings that cannot work, naming the settings to change;
a shutdown signal turns ``/readyz`` to draining at once."""

from __future__ import annotations

import signal

import click
import pytest
from tests.support import running

from tollhouse.app import create_app
from tollhouse.cli.serve import GatewayServer, check_startup
from tollhouse.config import load_settings
from tollhouse.web.server import server_config


def settings(**overrides):
    return load_settings(env={"TOLLHOUSE_CONFIG": "/dev/null"}, **overrides)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5", "::1", "localhost"])
def test_loopback_without_admin_key_is_fine(host):
    check_startup(settings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.example.com"])
def test_non_loopback_host_without_admin_key_is_refused(host):
    with pytest.raises(click.ClickException) as info:
        check_startup(settings(host=host))
    message = info.value.message
    assert host in message
    assert "TOLLHOUSE_ADMIN_KEY" in message
    assert "127.0.0.1" in message  # the other fix


def test_non_loopback_host_with_admin_key_is_fine():
    check_startup(settings(host="0.0.0.0", admin_key="k" * 32))


def test_agent_workers_out_of_process_need_a_shared_bus():
    with pytest.raises(click.ClickException) as info:
        check_startup(settings(agent_worker_in_process=False))
    assert "TOLLHOUSE_BUS_BACKEND" in info.value.message
    check_startup(
        settings(agent_worker_in_process=False, bus_backend="redis", redis_url="redis://h:1/0")
    )


def test_several_workers_on_sqlite_are_refused():
    with pytest.raises(click.ClickException) as info:
        check_startup(settings(workers=2))
    message = info.value.message
    assert "--workers 2" in message
    assert "TOLLHOUSE_DATABASE_URL" in message
    assert "TOLLHOUSE_REDIS_URL" in message


def test_several_workers_on_postgres_without_redis_are_refused():
    pg = "postgresql+asyncpg://tollhouse@127.0.0.1/tollhouse"
    with pytest.raises(click.ClickException) as info:
        check_startup(settings(workers=4, database_url=pg))
    assert "TOLLHOUSE_REDIS_URL" in info.value.message


def test_several_workers_with_shared_state_are_fine():
    pg = "postgresql+asyncpg://tollhouse@127.0.0.1/tollhouse"
    check_startup(settings(workers=2, database_url=pg, redis_url="redis://127.0.0.1"))


def test_one_worker_on_sqlite_is_fine():
    check_startup(settings(workers=1))


def test_serve_command_refuses_before_listening(invoke):
    result = invoke("serve", "--host", "0.0.0.0", "--port", "1")
    assert result.exit_code == 1
    assert "TOLLHOUSE_ADMIN_KEY" in result.output


def test_serve_command_refuses_workers_on_sqlite(invoke):
    result = invoke("serve", "--workers", "3")
    assert result.exit_code == 1
    assert "--workers 3" in result.output


def test_serve_command_reads_the_admin_key_from_env(invoke):
    result = invoke("serve", "--workers", "2", env={"TOLLHOUSE_HOST": "0.0.0.0",
                                                    "TOLLHOUSE_ADMIN_KEY": "k" * 32})  # fmt: skip
    # The host check passed (an admin key is set); the workers check refused.
    assert result.exit_code == 1
    assert "--workers 2" in result.output


def test_serve_command_missing_config(invoke, tmp_path):
    result = invoke("serve", config_file=tmp_path / "nope.yaml")
    assert result.exit_code == 1
    assert "cannot read config file" in result.output


def test_serve_refuses_an_empty_admin_key(invoke):
    result = invoke("serve", "--host", "0.0.0.0", env={"TOLLHOUSE_ADMIN_KEY": ""})
    assert result.exit_code != 0
    assert "admin_key" in result.output and "empty" in result.output


async def test_a_shutdown_signal_turns_readyz_to_draining(make_settings):
    async with running(make_settings()) as (app, client):
        server = GatewayServer(server_config(app.services.settings, app), app)
        assert (await client.get("/readyz")).json()["status"] == "ready"
        server.handle_exit(signal.SIGTERM, None)
        assert server.should_exit
        response = await client.get("/readyz")
        assert (response.status_code, response.json()) == (503, {"status": "draining"})


def test_a_shutdown_signal_before_start_up_only_stops_the_server(make_settings):
    settings = make_settings()
    app = create_app(settings)
    server = GatewayServer(server_config(settings, app), app)
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
