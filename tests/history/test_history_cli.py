"""The command line's arena vote, arena ratings and history list, over a data directory of the test's own.

    .venv/bin/python -m pytest -q tests/history/test_history_cli.py

(Named test_history_cli.py: tests/app/test_cli.py exists, and test files here share one namespace.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "data"
    monkeypatch.setenv("LAB_DATA_DIR", str(folder))
    return folder


def test_votes_cast_on_the_command_line_come_back_as_ratings_best_first(data_dir, capsys):
    from lab.core.settings import LabSettings
    from lab.engine import Engine

    # B beats C and A beats B, three times out of four, cast by two users: the first two of each pair from the
    # command line (each command builds an Engine: seconds), the rest through the Engine it calls.
    engine = Engine(LabSettings(data_dir=data_dir, auth=""))
    for better, worse in (("B", "C"), ("A", "B")):
        for n in range(16):
            winner, user = "a" if n % 4 != 3 else "b", "alice" if n % 2 else "bob"
            if n < 2:
                assert main(["arena", "vote", "--a", better, "--b", worse, "--winner", winner, "--user", user]) == 0
            else:
                engine.battles.record_vote(user, better, worse, winner)
    assert capsys.readouterr().out.count("recorded") == 4
    # A real process, as a person would run it: everything it knows comes from the database file.
    env = {**os.environ, "LAB_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "lab", "arena", "ratings", "--json", "--rounds", "100"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    ratings = json.loads(done.stdout)["ratings"]
    assert [r["name"] for r in ratings] == ["A", "B", "C"]
    assert all({"name", "rating", "ci_low", "ci_high", "votes"} <= set(r) for r in ratings)
    assert [r["votes"] for r in ratings] == [16, 32, 16]
    assert ratings[0]["ci_low"] > ratings[2]["ci_high"]


def test_a_vote_the_lab_cannot_record_exits_2_with_a_message(data_dir, capsys):
    assert main(["arena", "vote", "--a", "x", "--b", "x", "--winner", "a"]) == 2
    assert "two different contestants" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses a winner that is not a choice
        main(["arena", "vote", "--a", "x", "--b", "y", "--winner", "c"])
    assert exit_info.value.code == 2


def test_history_list_shows_one_users_records_only(data_dir, capsys):
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    from lab.knowledge.compare import MethodUpdate

    engine = Engine(LabSettings(data_dir=data_dir, auth=""))
    doc = engine.knowledge.bundled_document()
    kept = engine.history.record_compare("alice", doc, "what does CAG store ?", None,
                                         [MethodUpdate("rag", "the KV cache.", "the KV cache", done=True)])
    assert main(["history", "list", "--json", "--user", "alice"]) == 0
    items = json.loads(capsys.readouterr().out)["history"]
    assert [(i["id"], i["kind"], i["title"]) for i in items] == [(kept, "compare", "what does CAG store ?")]
    assert main(["history", "list", "--json", "--user", "bob"]) == 0
    assert json.loads(capsys.readouterr().out)["history"] == []
    assert main(["history", "list"]) == 0  # the local user has none yet: says where history comes from
    assert "no history yet" in capsys.readouterr().out
