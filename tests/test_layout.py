"""The shape of the code: packages without import cycles, small files, no hidden lazy imports.

These read the source with `ast` rather than importing it, so they also see imports made inside
functions (a lazy import hides a cycle from Python but not from the graph here).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "lab"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lab_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LAB.rglob("*.py"))}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every lab module this file imports, anywhere in it (top level, functions, TYPE_CHECKING blocks).

    `from lab.a import b` counts as lab.a.b when b is a module, else as lab.a. The parent packages
    Python loads on the way are not counted: that is how every package works, and the test below
    keeps package __init__ files from importing back into their own children's importers.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("lab"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found & known


def import_graph() -> dict[str, set[str]]:
    modules = lab_modules()
    return {name: imported_modules(path, set(modules)) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_under_lab():
    assert find_cycle(import_graph()) is None


def test_the_graph_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from lab.core import settings\n    import lab.engine\n")
    assert imported_modules(source, set(lab_modules())) == {"lab.core.settings", "lab.engine"}


def test_at_most_eight_top_level_modules_in_lab():
    top = [p.name for p in LAB.glob("*.py")]
    assert len(top) <= 8, top


@pytest.mark.parametrize("folder", ["lab", "tabs"])
def test_no_file_over_500_lines(folder):
    long = {str(p.relative_to(REPO)): n for p in (REPO / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long


def test_no_module_level_getattr():
    """A module-level __getattr__ builds names on first use: the trick that hid the old config cycle."""
    offenders = [name for name, path in lab_modules().items()
                 if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                        for n in ast.parse(path.read_text()).body)]
    assert not offenders


def test_lower_layers_never_import_the_engine():
    """The Engine is the facade over everything else; a package that imports it back would form a cycle."""
    importers = [name for name, deps in import_graph().items() if "lab.engine" in deps
                 and not name.startswith(("lab.cli", "lab.bench", "lab.__main__"))]
    assert not importers
