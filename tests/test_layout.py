"""The shape of the code: which lab package may import which, no import cycles, small files, no hidden lazy imports.

    python -m pytest -q tests/test_layout.py

These read the source with `ast` rather than importing it, so they also see imports made inside
functions (a lazy import hides a cycle from Python but not from the graph here). docs/ARCHITECTURE.md
draws ALLOWED as its layer diagram; change both together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "lab"

LOW = {"core", "inference", "knowledge", "training", "history", "explain"}
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "inference": {"core"},
    "knowledge": {"core", "inference"},
    "training": {"core", "inference", "knowledge"},
    "history": {"core", "inference", "knowledge"},
    "explain": {"core", "inference", "knowledge", "training"},
    "engine": LOW,
    "bench": {"core", "inference", "knowledge", "training"},
    "cli": LOW | {"engine", "bench"},
    "lab": set(),
}
"""Package -> the other lab packages its modules may import: every package below it along the lines of
docs/ARCHITECTURE.md's diagram (so the table is closed: what a package may import, its importers may too).
A package is a folder lab/<name>/; lab/__main__.py belongs to the CLI and lab/__init__.py is "lab". History
and training sit side by side above knowledge; the bench sits beside the Engine, above training (it measures
the packages directly, or the running app over HTTP), and only the CLI reaches the Engine. Importing `lab`
itself is always allowed: Python loads it before any of its packages anyway."""

WEB_APP = {"gradio", "tabs", "app"}
"""Top-level modules of the web app. It is built on the Engine, so nothing at or below the Engine imports
them; the CLI, beside the web app on top, serves app.py in-process for `python -m lab screenshots`.
(gradio_client, the HTTP client the bench drives the app with, is another package.)"""


def module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """lab.knowledge.rag -> knowledge, lab.__main__ -> cli (`python -m lab` is the CLI), lab -> lab."""
    parts = module.split(".")
    if len(parts) == 1:
        return parts[0]
    return "cli" if parts[1] == "__main__" else parts[1]


def lab_modules(root: Path = REPO) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / "lab").rglob("*.py"))}


def imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names) for every import in the file `module`, anywhere in it (top level,
    functions, TYPE_CHECKING blocks), relative imports made absolute, and `import_module("lab...")` or
    `__import__(...)` calls with a literal name. `import a.b` gives ("a.b", []); `from a import b` ("a", [b])."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            # `from ..x import y` in package a.b.c: level 2 climbs to a.b, then x.
            anchor = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*anchor, *([node.module] if node.module else [])])
            found.append((node.lineno, target, [a.name for a in node.names]))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            found.append((node.lineno, node.args[0].value, []))
    return found


def lab_imports(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, lab module) for each lab module the file imports. `from lab.a import b` counts as lab.a.b
    when b is a module, else as lab.a. The parent packages Python loads on the way are not counted: that
    is how every package works, and ALLOWED keeps package __init__ files from importing upwards."""
    found: list[tuple[int, str]] = []
    for line, target, names in imports(path, module):
        children = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
        found += [(line, child) for child in children]
        if len(children) < len(names) or not names:
            found.append((line, target))
    return [(line, target) for line, target in found if target in known]


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    modules = lab_modules(root)
    return {name: {t for _, t in lab_imports(path, name, set(modules))} - {name} for name, path in modules.items()}


def forbidden_edges(root: Path = REPO) -> list[str]:
    """Each import of a lab module that ALLOWED does not grant its importer, as 'lab/a/b.py:LINE: a imports lab.c'."""
    modules = lab_modules(root)
    bad = []
    for name, path in modules.items():
        mine = package_of(name)
        for line, target in lab_imports(path, name, set(modules)):
            theirs = package_of(target)
            if theirs not in (mine, "lab") and theirs not in ALLOWED.get(mine, set()):
                bad.append(f"{path.relative_to(root)}:{line}: {mine} imports {target}")
    return bad


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


def plant(root: Path, files: dict[str, str]) -> Path:
    """A lab tree under root: {'lab/core/x.py': source}, with the package __init__ files it needs."""
    for name, source in files.items():
        path = root / name
        for folder in [path.parent, *path.parent.parents]:
            if folder == root:
                break
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "__init__.py").touch()
        path.write_text(source)
    return root


def test_the_table_is_layered_and_names_every_package():
    """A new package gets a row here and a place in docs/ARCHITECTURE.md's diagram on purpose."""
    assert find_cycle(ALLOWED) is None
    assert set().union(*ALLOWED.values()) <= set(ALLOWED)
    assert all(ALLOWED[below] <= deps for deps in ALLOWED.values() for below in deps)  # closed
    assert {package_of(name) for name in lab_modules()} <= set(ALLOWED)


def test_lab_packages_import_only_what_the_table_allows():
    assert forbidden_edges() == []


def test_the_edge_check_sees_lazy_relative_and_importlib_imports(tmp_path):
    root = plant(tmp_path, {
        "lab/engine/__init__.py": "",
        "lab/knowledge/rag.py": "",
        "lab/inference/lazy.py": "def f():\n    from lab.engine import Engine\n",
        "lab/inference/relative.py": "from ..knowledge import rag\nfrom . import lazy\n",
        "lab/core/dynamic.py": "import importlib\nimportlib.import_module('lab.inference.lazy')\n",
        "lab/training/ok.py": "import lab.knowledge.rag\nfrom lab import core\n",
    })
    assert forbidden_edges(root) == ["lab/core/dynamic.py:2: core imports lab.inference.lazy",
                                     "lab/inference/lazy.py:2: inference imports lab.engine",
                                     "lab/inference/relative.py:1: inference imports lab.knowledge.rag"]


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    root = plant(tmp_path, {"lab/core/a.py": "def f():\n    from lab.core import b\n",
                            "lab/core/b.py": "import lab.core.a\n"})
    assert find_cycle(import_graph(root)) == ["lab.core.a", "lab.core.b", "lab.core.a"]


def test_no_import_cycle_under_lab():
    """Within a package too, where the table has nothing to say."""
    assert find_cycle(import_graph()) is None


def test_only_the_cli_imports_the_web_app():
    bad = [f"{path.relative_to(REPO)}:{line}: {target}" for name, path in lab_modules().items()
           if package_of(name) != "cli"
           for line, target, _ in imports(path, name) if target.split(".")[0] in WEB_APP]
    assert bad == []


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
