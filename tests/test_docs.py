"""The documentation agrees with the code (datasette's test_docs.py idea)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tollhouse.config import Settings, reference_table

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_page_lists_every_setting_with_its_default():
    page = (ROOT / "docs" / "configuration.md").read_text()
    block = re.search(r"<!-- settings-table.*?-->\n(.*?)\n<!-- /settings-table -->", page, re.S)
    assert block is not None, "docs/configuration.md lost its generated settings table"
    assert block.group(1) == reference_table(), (
        "docs/configuration.md is stale: regenerate the table with "
        "tollhouse.config.reference_table()"
    )
    for name in Settings.model_fields:
        assert f"| `{name}` |" in block.group(1)


def test_readme_fits_on_a_screen_and_names_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 60
    assert "scripts/test" in readme
    assert "tollhouse serve" in readme
    # Started through scripts/run, which makes its own environment: a bare `pip install`
    # fails where the system Python is externally managed (PEP 668).
    assert "scripts/run" in readme and "pip install" not in readme


def test_ci_runs_the_readme_test_command():
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_every_cli_command_is_documented():
    out = subprocess.run(
        [sys.executable, "-m", "tollhouse", "--help"], capture_output=True, text=True, check=True
    ).stdout
    commands = re.findall(r"^  ([a-z-]+)\s", out.split("Commands:")[1], re.M)
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for command in commands:
        assert f"tollhouse {command}" in docs, f"`tollhouse {command}` is not in docs/"


def test_references_point_into_the_repository():
    """Code, tests and docs cite ``docs/`` pages, never sections of an outside document."""
    outside = re.compile("DESIGN" + r"(\s*§|\.md|/)")
    for folder in ("src", "tests", "docs", "benchmarks", "devtools", "scripts"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".md", ".lua", ""}:
                for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    assert not outside.search(line), f"{path}:{number}: {line.strip()}"
