"""The layout holds: the top-level packages of ``tollhouse`` import one another without a
cycle, so each can be read, tested and changed from the bottom up (docs/architecture.md
draws them), and no module grows past 600 lines.

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``,
since a lazy or type-only import still ties the two packages together."""

from __future__ import annotations

import ast
from pathlib import Path

import tollhouse

ROOT = Path(tollhouse.__file__).parent


def _unit(module: str) -> str | None:
    """The top-level package (or module) of a dotted ``tollhouse`` name."""
    parts = module.split(".")
    return parts[1] if parts[0] == "tollhouse" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    package = ".".join(("tollhouse", *path.relative_to(ROOT).with_suffix("").parts))
    if path.name == "__init__.py":
        package = package.rsplit(".", 1)[0] + ".__init__"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # ``from tollhouse import errors`` names a unit too.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        unit = path.relative_to(ROOT).parts[0].removesuffix(".py")
        targets = {_unit(m) for m in _imports(path)}
        units = {p.name.removesuffix(".py") for p in ROOT.iterdir()}
        edges.setdefault(unit, set()).update(t for t in targets if t in units and t != unit)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_top_level_packages() -> None:
    edges = graph()
    tangled = cycles(edges)
    detail = {" ↔ ".join(c): {u: sorted(edges[u] & set(c)) for u in c} for c in tangled}
    assert not tangled, f"import cycles between top-level packages: {detail}"


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_past_600_lines() -> None:
    """Small modules read in one sitting; past 600 lines, one is two (split it)."""
    long = {
        str(path.relative_to(ROOT)): lines
        for path in ROOT.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > 600
    }
    assert long == {}
