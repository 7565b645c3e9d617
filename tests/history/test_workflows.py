"""Compare's question and evaluation as one workflow each, the same for the tab and the CLI: answered, kept in the
asker's History, saved in their workspace.

    .venv/bin/python -m pytest -q tests/history/test_workflows.py
"""

from __future__ import annotations

from lab.knowledge.configs import CompareConfig
from lab.knowledge.evaluation import QAItem

DOC = "the capital of france is paris . paris is a city on a river .\n"


def test_a_question_streams_is_kept_in_history_and_ends_with_the_break_even_lines(tiny_engine, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text(DOC)
    doc = tiny_engine.uploads.save("alice", notes)
    items = list(tiny_engine.workflows.ask(doc, "which city ?", ["base"], CompareConfig(max_new_tokens=4),
                                           user="alice"))
    *updates, last = items
    assert isinstance(last, list) and all(isinstance(line, str) for line in last)
    assert updates and updates[-1].done and updates[-1].method == "base"
    assert [i["title"] for i in tiny_engine.history.items("alice")] == ["which city ?"]
    assert tiny_engine.history.items("bob") == []


def test_an_evaluation_is_saved_in_the_workspace_and_kept_in_history(tiny_engine):
    doc = tiny_engine.knowledge.bundled_document()
    result, (json_path, csv_path) = tiny_engine.workflows.evaluate(
        doc, [QAItem("what does rag stand for ?", "retrieval augmented generation", 1)], ["base"],
        CompareConfig(max_new_tokens=4), user="alice", name="first-run")
    assert result["answered"] == 1
    assert json_path.name == "first-run.json" and csv_path.name == "first-run.csv"
    assert json_path.parent == tiny_engine.settings.data_dir / "users" / "alice" / "evaluations"
    assert [i["kind"] for i in tiny_engine.history.items("alice")] == ["evaluation"]
