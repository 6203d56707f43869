"""What ships: the wheel holds the gateway, not the tooling of its tests and benchmarks."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "src" / "tollhouse"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_nothing_shipped_imports_test_tooling():
    for path in SHIPPED.rglob("*.py"):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in ("tests", "devtools", "benchmarks"), f"{path}: imports {name}"


def test_test_tooling_is_outside_the_package():
    assert not (SHIPPED / "devstack.py").exists()
    assert (ROOT / "devtools" / "stack.py").is_file()
