"""Reading the CLI's output."""

from __future__ import annotations

from click.testing import Result


def table_rows(output: str) -> dict[str, list[str]]:
    """A rendered table as {first cell: other cells}, header and rule left out."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    rows: dict[str, list[str]] = {}
    for line in lines[2:]:
        cells = line.split()
        rows[cells[0]] = cells[1:]
    return rows


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, (result.output, result.exception)
