"""``tollhouse sandboxes``: seed local sandboxes (each with its work directory), list them,
their stats, run a command in one under the pool's limits, and create a broker token a
running server accepts."""

from __future__ import annotations

import json

from tests.cli.helpers import assert_ok, table_rows


def test_seed_list_stats_exec(invoke, config, tmp_path):
    sandbox_dir = tmp_path / "pool"
    config.write_text(config.read_text() + f"sandbox_dir: {sandbox_dir}\n")
    assert "no sandboxes" in invoke("sandboxes", "list").output
    seeded = invoke("sandboxes", "seed", "--count", "3", "--json")
    assert_ok(seeded)
    made = json.loads(seeded.output)["created"]
    assert len(made) == 3 and all((sandbox_dir / s).is_dir() for s in made)

    listed = invoke("sandboxes", "list")
    assert_ok(listed)
    rows = table_rows(listed.output)
    assert set(rows) == set(made) and all(r[2] == "available" for r in rows.values())
    stats = json.loads(invoke("sandboxes", "stats", "--json").output)
    assert stats["by_status"]["available"] == 3 and stats["total"] == 3
    assert "available" in invoke("sandboxes", "stats").output

    ran = invoke(
        "sandboxes",
        "exec",
        "--config",
        str(config),
        made[0],
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
        config_file=None,
    )
    assert ran.exit_code == 3, ran.output
    assert "out" in ran.output
    unknown = invoke(
        "sandboxes", "exec", "--config", str(config), "sbx_nothing", "true", config_file=None
    )
    assert unknown.exit_code != 0 and "not found" in unknown.output


def test_exec_reports_the_limit_that_stopped_it(invoke, config, tmp_path):
    config.write_text(
        config.read_text() + f"sandbox_dir: {tmp_path / 'pool'}\nsandbox_exec_wall_s: 0.5\n"
    )
    (sandbox,) = json.loads(invoke("sandboxes", "seed", "--count", "1", "--json").output)["created"]
    ran = invoke(
        "sandboxes", "exec", "--config", str(config), sandbox, "sleep", "30", config_file=None
    )
    assert ran.exit_code == 128 + 9 and "stopped: wall_clock limit" in ran.output


def test_a_token_from_the_shell(invoke):
    made = invoke("sandboxes", "tokens", "create", "labs", "--tag", "students", "--json")
    assert_ok(made)
    written = json.loads(made.output)
    assert written["value"].startswith("tbk-") and written["token"]["tags"] == ["students"]
    again = invoke("sandboxes", "tokens", "create", "labs")
    assert again.exit_code != 0 and "exists already" in again.output
