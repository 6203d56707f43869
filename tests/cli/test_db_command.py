"""``tollhouse db upgrade|current|downgrade`` on a real SQLite file."""

from __future__ import annotations

import sqlite3

from tests.cli.helpers import assert_ok

from tollhouse.db.schema import head


def tables(db_path) -> set[str]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def test_current_on_an_empty_database(invoke):
    result = invoke("db", "current")
    assert_ok(result)
    assert result.output == f"current: base (empty)\nhead:    {head()}\n"


def test_upgrade_current_downgrade_upgrade(invoke, db_path):
    result = invoke("db", "upgrade")
    assert_ok(result)
    assert result.output == f"database at revision {head()}\n"
    assert "usage_records" in tables(db_path)

    result = invoke("db", "current")
    assert_ok(result)
    assert result.output == f"current: {head()}\nhead:    {head()}\n"

    result = invoke("db", "downgrade", "base")
    assert_ok(result)
    assert result.output == "database at revision base (empty)\n"
    assert "usage_records" not in tables(db_path)

    assert_ok(invoke("db", "upgrade", "head"))
    assert "usage_records" in tables(db_path)


def test_downgrade_one_step_after_double_dash(invoke, config, db_path):
    assert_ok(invoke("db", "upgrade"))
    result = invoke("db", "downgrade", "--config", str(config), "--", "-1", config_file=None)
    assert_ok(result)
    assert result.output == "database at revision 0014\n"
    assert "virtual_keys" in tables(db_path)


def test_downgrade_one_step_as_documented(invoke, db_path):
    # docs/database.md: `tollhouse db downgrade -1  # one step back`
    assert_ok(invoke("db", "upgrade"))
    result = invoke("db", "downgrade", "-1")
    assert_ok(result)
    assert result.output == "database at revision 0014\n"
    assert "virtual_keys" in tables(db_path)


def test_database_url_from_env(invoke, tmp_path):
    other = tmp_path / "other.db"
    result = invoke(
        "db",
        "upgrade",
        config_file=None,
        env={
            "TOLLHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{other}",
            "TOLLHOUSE_CONFIG": "/dev/null",
        },
    )
    assert_ok(result)
    assert "usage_records" in tables(other)


def test_missing_config_file_is_a_clean_error(invoke, tmp_path):
    missing = tmp_path / "nope.yaml"
    result = invoke("db", "current", config_file=missing)
    assert result.exit_code == 1
    assert "cannot read config file" in result.output
    assert str(missing) in result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback


def test_invalid_config_is_a_clean_error(invoke, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers: none\n")
    result = invoke("db", "upgrade", config_file=bad)
    assert result.exit_code == 1
    assert "workers" in result.output
    assert isinstance(result.exception, SystemExit)


def test_unsupported_database_url_is_a_clean_error(invoke, tmp_path):
    cfg = tmp_path / "mysql.yaml"
    cfg.write_text("database_url: mysql://tollhouse@127.0.0.1/tollhouse\n")
    result = invoke("db", "upgrade", config_file=cfg)
    assert result.exit_code == 1
    assert "unsupported database_url" in result.output
    assert "postgresql://" in result.output  # the accepted forms are named
    assert isinstance(result.exception, SystemExit), result.exception


def test_plain_sqlite_url_from_env_is_accepted(invoke, tmp_path):
    """``sqlite:///PATH``, as other tools write it, runs on aiosqlite."""
    path = tmp_path / "plain.db"
    env = {"TOLLHOUSE_DATABASE_URL": f"sqlite:///{path}", "TOLLHOUSE_CONFIG": "/dev/null"}
    assert_ok(invoke("db", "upgrade", config_file=None, env=env))
    assert "usage_records" in tables(path)


def test_help_lists_the_commands(invoke):
    result = invoke("--help", config_file=None)
    assert_ok(result)
    for command in ("serve", "db", "usage", "dev-upstream"):
        assert command in result.output
    db_help = invoke("db", "--help", config_file=None)
    assert_ok(db_help)
    for command in ("upgrade", "downgrade", "current"):
        assert command in db_help.output
