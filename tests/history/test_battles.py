"""Battles through the Engine: two anonymous contestants, one vote, then the names, and the leaderboard.

    .venv/bin/python -m pytest -q tests/history/test_battles.py
"""

from __future__ import annotations

from dataclasses import asdict

import pytest

from lab.history.battles import BattleConfig, SideUpdate
from lab.history.records import HIDDEN_ERROR

DOC = "the capital of france is paris . paris is a city on a river .\n"


@pytest.fixture
def battle_engine(tiny_engine, tmp_path):
    """The tiny engine with a short document in the local user's uploads (the tiny model's window is 256)."""
    notes = tmp_path / "notes.md"
    notes.write_text(DOC)
    tiny_engine.uploads.save("local", notes)
    return tiny_engine


def test_a_battle_hides_its_contestants_until_the_vote_then_feeds_the_leaderboard(battle_engine):
    engine = battle_engine
    pool = [engine.settings.model_id, "full"]
    names = {engine.settings.model_id, "full on notes.md"}
    number = engine.battles.start("local", pool, "what is the capital of france ?", "notes.md",
                                  BattleConfig(max_new_tokens=8, reserve_tokens=32))
    item = engine.history.item("local", f"battle-{number}")
    assert item["a"]["name"] is None and item["b"]["name"] is None
    assert not any(name in str(item) for name in names)
    assert engine.history.items("local")[0]["detail"] == "not voted yet"
    with pytest.raises(ValueError, match="not finished answering"):
        engine.battles.vote("local", number, "a")

    updates = list(engine.battles.stream("local", number))
    for update in updates:  # what the browser receives says A or B, never who
        assert not any(name in str(value) for value in asdict(update).values() for name in names)
    finals = {u.side: u for u in updates if u.done}
    assert set(finals) == {0, 1} and all(u.error is None for u in finals.values())

    reveal = engine.battles.vote("local", number, "a")
    assert {reveal["a"], reveal["b"]} == names and reveal["winner"] == "a"
    item = engine.history.item("local", f"battle-{number}")
    assert (item["a"]["name"], item["b"]["name"]) == (reveal["a"], reveal["b"])
    assert [item["a"]["text"], item["b"]["text"]] == [finals[0].text, finals[1].text]
    with pytest.raises(ValueError, match="already has your vote"):
        engine.battles.vote("local", number, "b")

    board = engine.battles.ratings()
    assert [r.name for r in board.ratings] == [reveal["a"], reveal["b"]]  # A won its one vote
    assert [r.votes for r in board.ratings] == [1, 1] and board.notice


def test_another_user_cannot_stream_vote_on_or_open_a_battle(battle_engine):
    engine = battle_engine
    number = engine.battles.start("local", [engine.settings.model_id, "full"], "which city ?", "notes.md")
    for action in (lambda: list(engine.battles.stream("bob", number)), lambda: engine.battles.vote("bob", number, "a")):
        with pytest.raises(KeyError, match="no battle"):
            action()
    with pytest.raises(KeyError):
        engine.history.item("bob", f"battle-{number}")
    with pytest.raises(ValueError, match="no upload"):  # nor battle on someone else's document
        engine.battles.start("bob", [engine.settings.model_id, "full"], "which city ?", "notes.md")


def test_pools_are_checked_kept_per_user_and_only_admins_set_the_teams(battle_engine):
    engine = battle_engine
    base = engine.settings.model_id
    assert engine.battles.pool("alice") == engine.battles.choices()  # nobody kept one: everything offered
    with pytest.raises(ValueError, match="at least two"):
        engine.battles.start("alice", [base, base], "which city ?")
    with pytest.raises(ValueError, match="cannot battle here"):
        engine.battles.save_pool("alice", [base, "no-such-model"])
    with pytest.raises(PermissionError, match="LAB_ADMINS"):
        engine.battles.save_pool("alice", [base, "rag"], team=True)
    engine.settings.admins = "carol"
    engine.battles.save_pool("carol", [base, "rag"], team=True)
    engine.battles.save_pool("alice", [base, "full", "cag"])
    assert engine.battles.pool("alice") == [base, "full", "cag"]
    assert engine.battles.pool("bob") == [base, "rag"]  # the team's pool, set by the admin


def test_a_vote_between_named_contestants_needs_two_names_and_a_known_winner(tiny_engine):
    with pytest.raises(ValueError, match="winner must be one of"):
        tiny_engine.battles.record_vote("local", "x", "y", "c")
    with pytest.raises(ValueError, match="two different contestants"):
        tiny_engine.battles.record_vote("local", "x", "x", "a")
    tiny_engine.battles.record_vote("alice", "x", "y", "b")
    assert [r.name for r in tiny_engine.battles.ratings().ratings] == ["y", "x"]


def test_a_contestants_error_is_hidden_until_the_vote_since_it_may_name_the_model(battle_engine):
    engine = battle_engine
    # The default room kept beside the document (256) does not fit the tiny model's window of 256: `full` fails.
    number = engine.battles.start("local", [engine.settings.model_id, "full"], "which city ?", "notes.md",
                                  BattleConfig(max_new_tokens=4))
    failed = [u for u in engine.battles.stream("local", number) if u.error]
    assert failed and {u.error for u in failed} == {HIDDEN_ERROR}
    with pytest.raises(ValueError, match="could not answer.*discard"):  # not a fair contest: no vote counts
        engine.battles.vote("local", number, "both_bad")
    reveal = engine.battles.discard("local", number)  # nothing more to hide, nothing recorded
    full_side = "a" if reveal["a"] == "full on notes.md" else "b"
    assert "too long for CAG and full-context" in reveal[f"{full_side}_error"] and reveal["winner"] is None
    assert engine.battles.ratings().total_votes == 0 and engine.history.items("local", kinds=["battle"]) == []


def test_a_vote_on_a_battle_with_an_empty_answer_is_refused_and_it_can_be_discarded(battle_engine, monkeypatch):
    engine = battle_engine
    real = engine.battles._side

    def said_nothing(side):  # a generator, as every side's stream is (they are closed when the battle ends)
        yield SideUpdate(side)
        yield SideUpdate(side, "  ", done=True)

    def one_side_empty(side, entry, *args):
        # `full` answers nothing at all, as a model that emits its end token first would.
        return said_nothing(side) if entry == "full" else real(side, entry, *args)

    monkeypatch.setattr(engine.battles, "_side", one_side_empty)
    number = engine.battles.start("local", [engine.settings.model_id, "full"], "which city ?", "notes.md",
                                  BattleConfig(max_new_tokens=4, reserve_tokens=32))
    assert all(u.error is None for u in engine.battles.stream("local", number))
    for winner in ("a", "b", "tie", "both_bad"):
        with pytest.raises(ValueError, match="empty answer.*discard"):
            engine.battles.vote("local", number, winner)
    assert engine.battles.ratings().total_votes == 0
    engine.battles.discard("local", number)
    with pytest.raises(KeyError, match="no battle"):  # gone: neither voted on nor kept in History
        engine.battles.vote("local", number, "a")


def test_a_voted_battle_cannot_be_discarded(battle_engine):
    engine = battle_engine
    number = engine.battles.start("local", [engine.settings.model_id, "full"], "which city ?", "notes.md",
                                  BattleConfig(max_new_tokens=4, reserve_tokens=32))
    list(engine.battles.stream("local", number))
    engine.battles.vote("local", number, "tie")
    with pytest.raises(ValueError, match="already has your vote"):
        engine.battles.discard("local", number)
