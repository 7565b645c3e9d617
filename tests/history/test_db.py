"""The history database: migrations, WAL, writers in many threads, privacy, and a comparison kept across a restart.

    .venv/bin/python -m pytest -q tests/history/test_db.py
"""

from __future__ import annotations

import sqlite3
import stat
import threading

import pytest

from lab.core.errors import DataDirError
from lab.history import records
from lab.history.db import MIGRATIONS, HistoryDB


def tables(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_new_file_gets_every_migration_in_wal_mode_readable_by_its_owner_only(tmp_path):
    db = HistoryDB(tmp_path / "h.sqlite3")
    assert db.version() == len(MIGRATIONS)
    assert db.journal_mode() == "wal"
    assert stat.S_IMODE((tmp_path / "h.sqlite3").stat().st_mode) == 0o600
    assert {"compares", "compare_answers", "evaluations", "arena_transcripts", "battles", "votes",
            "pools"} <= tables(tmp_path / "h.sqlite3")


def test_an_older_file_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # what the first version of the lab wrote
        conn.executescript(MIGRATIONS[0])
        conn.execute("INSERT INTO votes (user, created, a_name, b_name, winner) VALUES ('alice', 0, 'x', 'y', 'a')")
        conn.execute("PRAGMA user_version = 1")
    assert "pools" not in tables(path)
    db = HistoryDB(path)
    assert db.version() == len(MIGRATIONS)
    assert "pools" in tables(path)
    assert records.all_votes(db) == [("x", "y", "a")]
    db.close()
    assert HistoryDB(path).version() == len(MIGRATIONS)  # opening a current file changes nothing


def test_a_file_from_a_newer_lab_is_refused_with_a_message(tmp_path):
    path = tmp_path / "new.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    with pytest.raises(DataDirError, match="newer lab"):
        HistoryDB(path)


def test_many_threads_and_two_handles_write_at_once_and_nothing_is_lost(tmp_path):
    path = tmp_path / "busy.sqlite3"
    handles = [HistoryDB(path), HistoryDB(path)]  # two handles: like the app and a command line at once
    threads, writes, errors = 8, 50, []
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        db = handles[t % 2]
        start.wait()
        try:
            for n in range(writes):
                if n % 2:
                    records.add_vote(db, f"user{t}", f"writer-{t}", f"answer-{n}", "tie")
                else:
                    records.add_compare(db, f"user{t}", f"question {t}/{n}", "doc.md", "0" * 64, "tiny", {},
                                        [{"method": "base", "answer": str(n)}])
        except Exception as exc:  # reported below: an exception in a thread would otherwise vanish
            errors.append(exc)

    pool = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    check = HistoryDB(path)
    assert len(records.all_votes(check)) == threads * writes // 2
    for t in range(threads):
        mine = records.list_items(check, f"user{t}")
        assert sorted(item["title"] for item in mine) == sorted(f"question {t}/{n}" for n in range(0, writes, 2))
    assert check.rows("SELECT COUNT(*) AS n FROM compare_answers")[0]["n"] == threads * writes // 2


def fake_finals(answer: str) -> list:
    from lab.knowledge.compare import MethodUpdate
    return [MethodUpdate("base", text=f"{answer}.", answer=answer, metrics={"ttft_s": 0.1, "total_s": 0.2},
                         done=True, finish_reason="eos")]


def test_one_user_never_sees_lists_opens_exports_or_deletes_anothers_records(tiny_engine):
    engine, doc = tiny_engine, tiny_engine.knowledge.bundled_document()
    mine = engine.history.record_compare("alice", doc, "what does alice ask ?", None, fake_finals("paris"))
    engine.history.record_compare("bob", doc, "what does bob ask ?", None, fake_finals("rome"))
    assert [item["title"] for item in engine.history.items("alice")] == ["what does alice ask ?"]
    assert [item["title"] for item in engine.history.items("bob")] == ["what does bob ask ?"]
    assert engine.history.items("bob", search="alice") == []
    for action in (engine.history.item, engine.history.delete):
        with pytest.raises(KeyError, match="You have no history record"):
            action("bob", mine)
    json_path, csv_path = engine.history.export("bob", "everything")
    assert "alice" not in json_path.read_text() and "alice" not in csv_path.read_text()
    assert json_path.parent == engine.settings.data_dir / "users" / "bob" / "history"
    assert engine.history.item("alice", mine)["answers"][0]["answer"] == "paris"
    engine.history.delete("alice", mine)
    assert engine.history.items("alice") == []


def test_search_finds_questions_and_answers_and_refuses_unknown_ids(tiny_engine):
    doc = tiny_engine.knowledge.bundled_document()
    tiny_engine.history.record_compare("alice", doc, "which river ?", None, fake_finals("the seine"))
    tiny_engine.history.record_compare("alice", doc, "which city ?", None, fake_finals("paris"))
    assert [i["title"] for i in tiny_engine.history.items("alice", search="SEINE")] == ["which river ?"]
    assert [i["title"] for i in tiny_engine.history.items("alice", search="city")] == ["which city ?"]
    assert tiny_engine.history.items("alice", search="100%") == []  # % is a letter here, not a wildcard
    with pytest.raises(ValueError, match="compare-12"):
        tiny_engine.history.item("alice", "../etc/passwd")


def test_yesterdays_comparison_reopens_after_a_restart(tiny_engine):
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    from lab.knowledge.compare import CompareConfig

    doc, cfg = tiny_engine.knowledge.bundled_document(), CompareConfig(max_new_tokens=6)
    question = "what is the capital of france ?"
    finals = [u for u in tiny_engine.knowledge.stream_compare(doc, question, ["base"], cfg) if u.done]
    kept = tiny_engine.history.record_compare("local", doc, question, cfg, finals)

    restarted = Engine(LabSettings(data_dir=tiny_engine.settings.data_dir, model_id=tiny_engine.settings.model_id,
                                   memory_budget_gb=1.0, load_in_4bit=False, auth=""), device=tiny_engine.device)
    assert [item["id"] for item in restarted.history.items("local")] == [kept]
    item = restarted.history.item("local", kept)
    assert item["question"] == question and item["document"] == doc.name
    assert item["settings"]["max_new_tokens"] == 6
    assert [(a["method"], a["text"], a["metrics"]) for a in item["answers"]] == \
        [(u.method, u.text, u.metrics) for u in finals]


def test_an_evaluation_is_kept_with_its_settings_and_scores(tiny_engine, tmp_path):
    from lab.knowledge.compare import CompareConfig

    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "what is the capital of france ?", "answer": "paris"}\n')
    cfg = CompareConfig(max_new_tokens=4)
    knowledge = tiny_engine.knowledge
    result = knowledge.evaluate(knowledge.bundled_document(), knowledge.load_qa(qa), ["base"], cfg)
    kept = tiny_engine.history.record_evaluation("alice", result, cfg)
    item = tiny_engine.history.item("alice", kept)
    assert item["methods"] == result["methods"] and item["rows"] == result["rows"]
    assert item["settings"]["max_new_tokens"] == 4
    assert tiny_engine.history.items("alice")[0]["kind"] == "evaluation"
