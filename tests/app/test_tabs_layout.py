"""The tabs are thin callers of the Engine: what they may import from lab/, read with `ast`.

    python -m pytest -q tests/app/test_tabs_layout.py

A tab may import the Engine, the error tuple and its message helper, the ZeroGPU decorator, and
classes (config dataclasses such as CompareConfig, RagConfig, GenerationSettings). Every other lab
function, constant or module goes through a method of an Engine service, so the rules about users, files and
quotas are made in one place. Imports inside functions count too (a lazy import hides nothing here).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALLOWED = {("lab.engine", "Engine"), ("lab.core.errors", "USER_ERRORS"), ("lab.core.errors", "user_message"),
           ("lab.core.spaces", "gpu")}


def tab_files() -> list[Path]:
    return [*sorted((REPO / "tabs").glob("*.py")), REPO / "app.py"]


def lab_imports(source: str) -> list[tuple[str, str | None, int]]:
    """(module, name, line) for every import from lab/ anywhere in the source; name None for `import lab.x`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "lab"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "lab":
            found += [(node.module, a.name, node.lineno) for a in node.names]
    return found


def forbidden_imports(source: str) -> list[str]:
    """Each import from lab/ that is neither on the allowed list nor a class, as 'line N: module.name'."""
    bad = []
    for module, name, line in lab_imports(source):
        if (module, name) in ALLOWED:
            continue
        if name is not None and name != "*":
            value = getattr(importlib.import_module(module), name, None)
            if inspect.isclass(value) and not inspect.ismodule(value):
                continue
        bad.append(f"line {line}: {module}{'.' + name if name else ''}")
    return bad


def test_the_checker_flags_planted_imports(tmp_path):
    planted = tmp_path / "planted_tab.py"
    planted.write_text("from lab.engine import Engine\n"
                       "from lab.core.errors import USER_ERRORS\n"
                       "from lab.knowledge.rag import RagConfig\n"
                       "from lab.core.users import user_of\n"
                       "import lab.core.settings\n"
                       "from lab.explain import catalog\n"
                       "from lab.core.settings import BUNDLED_QA\n"
                       "def handler():\n"
                       "    from lab.inference.adapters import list_adapters\n")
    assert forbidden_imports(planted.read_text()) == [
        "line 4: lab.core.users.user_of", "line 5: lab.core.settings", "line 6: lab.explain.catalog",
        "line 7: lab.core.settings.BUNDLED_QA", "line 9: lab.inference.adapters.list_adapters"]


@pytest.mark.parametrize("path", tab_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_tabs_import_only_the_engine_errors_and_classes_from_lab(path):
    assert forbidden_imports(path.read_text()) == []


@pytest.mark.parametrize("path", tab_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_tab_files_stay_small(path):
    assert len(path.read_text().splitlines()) <= 500


def test_compare_cards_show_the_source_and_the_break_even_line():
    """What a person reads under the cards once every answer is in (the numbers come from
    engine.knowledge.break_even)."""
    from lab.knowledge.breakeven import break_even
    from lab.knowledge.compare import MethodUpdate
    from lab.knowledge.rag import RetrievedChunk
    from tabs.cards import render_cards
    rag = MethodUpdate("rag", text="Paris.", answer="Paris", done=True, metrics={"total_s": 0.5},
                       citation=RetrievedChunk(text="France's capital is Paris.", score=0.9, chunk_id=3,
                                               heading="Europe > France"))
    line = break_even("cag", 3.0, 0.5, 2.0)
    html = render_cards({"rag": rag}, break_even=[line.sentence()])
    assert "source: Europe &gt; France" in html
    assert "compare-break-even" in html and f"<b>{line.questions}</b> question" in html
    assert "compare-break-even" not in render_cards({"rag": rag})  # not before the answers are in
