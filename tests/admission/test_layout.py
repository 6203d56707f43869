"""The admission package's shape (docs/admission.md): who may import it, what it may
import, and an engine that cannot tell its meters apart. Read from the source, so a
change that breaks the shape fails here before it tangles the packages."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tollhouse"
PACKAGE = SRC / "admission"


def imports(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Every module ``path`` imports (with ``runtime_only``, not those imported only
    under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_admission_reaches_alerts_only_through_the_sink_it_is_given():
    for path in PACKAGE.glob("*.py"):
        assert not any(m.startswith("tollhouse.alerts") for m in imports(path)), path.name


def test_only_the_app_wiring_imports_the_engine_at_run_time():
    """The gateway calls it through its own Protocol, the admin routes through the app's
    state, alerts name its types for the type checker only."""
    for path in SRC.rglob("*.py"):
        if PACKAGE in path.parents:
            continue
        found = imports(path, runtime_only=True)
        if any(m.startswith("tollhouse.admission") for m in found):
            assert path == SRC / "app.py", path.relative_to(SRC)


def test_the_engine_knows_the_meter_protocol_and_neither_strategy():
    found = imports(PACKAGE / "engine.py")
    assert "tollhouse.admission.meter.Meter" in found
    for strategy in ("memory", "redis", "functions"):
        assert not any(m.startswith(f"tollhouse.admission.{strategy}") for m in found)
    source = (PACKAGE / "engine.py").read_text()
    for word in ("MemoryMeter", "RedisMeter", "redis", "shared"):
        assert word not in source, word


def test_modules_stay_small():
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path.name
