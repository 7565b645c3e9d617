"""What History keeps and shows of a battle before its vote: nothing that names a contestant.

    .venv/bin/python -m pytest -q tests/history/test_battle_records.py
"""

from __future__ import annotations

import json

from lab.history import records
from lab.history.db import HistoryDB

REAL_ERROR = "The document is too long for CAG and full-context on SmolLM2-135M-Instruct."


def test_an_unvoted_battles_error_stays_hidden_in_history_and_its_export(tmp_path):
    db = HistoryDB(tmp_path / "history.sqlite")
    number = records.add_battle(db, "alice", "which city?", "notes.md", {"a_entry": "cag", "b_entry": "base"},
                                "cag on notes.md", "SmolLM2")
    records.finish_battle(db, "alice", number, ["", "Paris."], [REAL_ERROR, None])
    item = records.get_item(db, "alice", f"battle-{number}")
    assert item["a"] == {"name": None, "text": "", "error": records.HIDDEN_ERROR}
    assert item["b"]["error"] is None and item["b"]["name"] is None
    shown = json.dumps(item)
    assert "CAG" not in shown and "SmolLM2" not in shown and "cag" not in shown


def test_after_the_vote_history_shows_the_names_and_the_real_error(tmp_path):
    db = HistoryDB(tmp_path / "history.sqlite")
    number = records.add_battle(db, "alice", "which city?", None, {}, "cag on notes.md", "SmolLM2")
    records.finish_battle(db, "alice", number, ["x", "Paris."], [REAL_ERROR, None])
    records.add_vote(db, "alice", "cag on notes.md", "SmolLM2", "b", battle=number)
    item = records.get_item(db, "alice", f"battle-{number}")
    assert item["a"] == {"name": "cag on notes.md", "text": "x", "error": REAL_ERROR}
