"""Each user's history: Compare answers, evaluations, Arena transcripts and battles, kept, listed, searched, deleted.

    python -m lab history list --json            # the local user's history, newest first

Every function takes the user it acts for and touches only that user's rows: one user can neither
list, open nor delete another's. A record is named `<kind>-<number>` (`compare-12`, `battle-3`).
Votes are the one shared thing (they feed everyone's leaderboard), so deleting a battle keeps its
vote, without the link back to the battle. A battle's contestants stay hidden in every view here
until its vote is in.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from lab.history.db import HistoryDB

KINDS = ("compare", "evaluation", "arena", "battle")
"""What the History view lists: Compare questions, evaluation runs, Arena transcripts and battles."""

WINNERS = ("a", "b", "tie", "both_bad")
"""A vote: A was better, B was better, a tie, or both were bad (a tie for the ratings, as in FastChat)."""

EXPORT_FIELDS = ("id", "kind", "when", "title", "detail")
"""Columns of a history CSV, one line per record."""

HIDDEN_ERROR = "This contestant could not answer; why is shown with its name when you discard the battle."
"""What a contestant's error reads as until the battle is discarded, live and in History and its exports (a battle
with a failed side takes no vote): the real message often names the model or method ("too long for CAG ... on
MODEL")."""

_ITEM_ID = re.compile(r"^(compare|evaluation|arena|battle)-([0-9]{1,18})$")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _when(created: float) -> str:
    return datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M:%S")


def parse_item_id(item_id: str) -> tuple[str, int]:
    """'compare-12' -> ('compare', 12); anything else is refused with the form it should take."""
    match = _ITEM_ID.match((item_id or "").strip())
    if not match:
        raise ValueError(f"{item_id!r} is not a history record; records are named like compare-12, evaluation-3, "
                         "arena-5 or battle-7 (see the History list).")
    return match.group(1), int(match.group(2))


# ---- writing ------------------------------------------------------------------------------------

def add_compare(db: HistoryDB, user: str, question: str, document: str, document_sha256: str, model: str,
                settings: dict, answers: Sequence[dict]) -> str:
    """One Compare question with every method's final answer and costs; answers hold method, answer, text,
    error, finish_reason, metrics and chunks."""
    with db.write() as cur:
        cur.execute("INSERT INTO compares (user, created, question, document, document_sha256, model, settings) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (user, time.time(), question, document, document_sha256, model, _json(settings)))
        number = cur.lastrowid
        cur.executemany("INSERT INTO compare_answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(number, i, a["method"], a.get("answer") or "", a.get("text") or "", a.get("error"),
                          a.get("finish_reason"), _json(a.get("metrics") or {}), _json(a.get("chunks") or []))
                         for i, a in enumerate(answers)])
    return f"compare-{number}"


def add_evaluation(db: HistoryDB, user: str, result: dict, settings: dict) -> str:
    """An evaluation run as lab.knowledge.evaluation returns it: its per-method scores and every row."""
    with db.write() as cur:
        cur.execute("INSERT INTO evaluations (user, created, document, model, methods, questions, settings, scores, "
                    "rows) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (user, time.time(), result.get("document", ""), result.get("model", ""),
                     _json(list(result["methods"])), int(result.get("questions", 0)), _json(settings),
                     _json(result["methods"]), _json(result.get("rows", []))))
        number = cur.lastrowid
    return f"evaluation-{number}"


def add_arena(db: HistoryDB, user: str, title: str, transcript: dict) -> str:
    """An Arena transcript (lab.inference.arena.transcript): every column's model, settings and messages."""
    with db.write() as cur:
        cur.execute("INSERT INTO arena_transcripts (user, created, title, transcript) VALUES (?, ?, ?, ?)",
                    (user, time.time(), title, _json(transcript)))
        number = cur.lastrowid
    return f"arena-{number}"


def add_battle(db: HistoryDB, user: str, prompt: str, document: str | None, settings: dict, a_name: str,
               b_name: str) -> int:
    with db.write() as cur:
        cur.execute("INSERT INTO battles (user, created, prompt, document, settings, a_name, b_name) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (user, time.time(), prompt, document, _json(settings), a_name, b_name))
        return cur.lastrowid


def finish_battle(db: HistoryDB, user: str, number: int, texts: Sequence[str], errors: Sequence[str | None]) -> None:
    """Keep both answers once they have streamed."""
    with db.write() as cur:
        cur.execute("UPDATE battles SET a_text = ?, b_text = ?, a_error = ?, b_error = ?, answered = 1 "
                    "WHERE id = ? AND user = ?", (*texts, *errors, number, user))


def battle_row(db: HistoryDB, user: str, number: int) -> dict:
    """A battle of `user`'s with its contestants (server side only) and its vote, if any."""
    rows = db.rows("SELECT b.*, v.winner FROM battles b LEFT JOIN votes v ON v.battle_id = b.id "
                   "WHERE b.id = ? AND b.user = ?", (number, user))
    if not rows:
        raise KeyError(f"You have no battle {number}; start one in the Battles tab.")
    return dict(rows[0])


def add_vote(db: HistoryDB, user: str, a_name: str, b_name: str, winner: str, battle: int | None = None) -> int:
    """One vote between two named contestants; a battle takes one vote only."""
    if winner not in WINNERS:
        raise ValueError(f"The winner must be one of {', '.join(WINNERS)}, got {winner!r}.")
    if not a_name.strip() or not b_name.strip() or a_name.strip() == b_name.strip():
        raise ValueError(f"A vote needs two different contestants, got {a_name!r} and {b_name!r}.")
    with db.write() as cur:
        if battle is not None and cur.execute("SELECT 1 FROM votes WHERE battle_id = ?", (battle,)).fetchone():
            raise ValueError(f"Battle {battle} already has your vote; start a new battle to vote again.")
        cur.execute("INSERT INTO votes (battle_id, user, created, a_name, b_name, winner) VALUES (?, ?, ?, ?, ?, ?)",
                    (battle, user, time.time(), a_name.strip(), b_name.strip(), winner))
        return cur.lastrowid


def all_votes(db: HistoryDB) -> list[tuple[str, str, str]]:
    """Every vote of every user, (a, b, winner): the shared leaderboard's input."""
    return [(r["a_name"], r["b_name"], r["winner"]) for r in db.rows("SELECT a_name, b_name, winner FROM votes")]


def save_pool(db: HistoryDB, owner: str, contestants: Sequence[str]) -> None:
    with db.write() as cur:
        cur.execute("INSERT INTO pools (owner, contestants, updated) VALUES (?, ?, ?) ON CONFLICT(owner) DO UPDATE "
                    "SET contestants = excluded.contestants, updated = excluded.updated",
                    (owner, _json(list(contestants)), time.time()))


def pool(db: HistoryDB, owner: str) -> list[str] | None:
    rows = db.rows("SELECT contestants FROM pools WHERE owner = ?", (owner,))
    return json.loads(rows[0]["contestants"]) if rows else None


# ---- reading ------------------------------------------------------------------------------------

def _like(search: str) -> str:
    escaped = search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_LISTS = {
    "compare": ("SELECT id, created, question AS title, document || ' · ' || model AS detail FROM compares "
                "WHERE user = ? AND (question LIKE ? ESCAPE '\\' OR document LIKE ? ESCAPE '\\' OR model LIKE ? "
                "ESCAPE '\\' OR id IN (SELECT compare_id FROM compare_answers WHERE answer LIKE ? ESCAPE '\\'))", 4),
    "evaluation": ("SELECT id, created, 'evaluation of ' || questions || ' questions: ' || methods AS title, "
                   "document || ' · ' || model AS detail FROM evaluations WHERE user = ? AND (document LIKE ? "
                   "ESCAPE '\\' OR model LIKE ? ESCAPE '\\' OR methods LIKE ? ESCAPE '\\')", 3),
    "arena": ("SELECT id, created, title, '' AS detail FROM arena_transcripts WHERE user = ? AND (title LIKE ? "
              "ESCAPE '\\' OR transcript LIKE ? ESCAPE '\\')", 2),
    # The names are searched, and shown, only once the battle has its vote.
    "battle": ("SELECT b.id, b.created, b.prompt AS title, CASE WHEN v.winner IS NULL THEN 'not voted yet' "
               "ELSE b.a_name || ' vs ' || b.b_name || ' · ' || v.winner END AS detail FROM battles b "
               "LEFT JOIN votes v ON v.battle_id = b.id WHERE b.user = ? AND (b.prompt LIKE ? ESCAPE '\\' OR "
               "(v.winner IS NOT NULL AND (b.a_name LIKE ? ESCAPE '\\' OR b.b_name LIKE ? ESCAPE '\\')))", 3),
}


def list_items(db: HistoryDB, user: str, search: str = "", kinds: Sequence[str] = KINDS,
               limit: int = 500) -> list[dict]:
    """`user`'s records, newest first: id, kind, when, title and a one-line detail; `search` matches questions,
    prompts, documents, models and answers (case-insensitive)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"Unknown history kind {', '.join(sorted(unknown))}; the kinds are {', '.join(KINDS)}.")
    pattern, found = _like(search), []
    for kind in kinds:
        sql, n_patterns = _LISTS[kind]
        # ORDER BY 2: `created`, the second column of every query above (a bare name is ambiguous in the join).
        for row in db.rows(f"{sql} ORDER BY 2 DESC LIMIT ?", (user, *[pattern] * n_patterns, limit)):
            found.append({"id": f"{kind}-{row['id']}", "kind": kind, "created": row["created"],
                          "when": _when(row["created"]), "title": row["title"], "detail": row["detail"]})
    found.sort(key=lambda item: item["created"], reverse=True)
    return found[:limit]


def _one(db: HistoryDB, sql: str, user: str, number: int, item_id: str) -> dict:
    rows = db.rows(sql, (number, user))
    if not rows:  # someone else's record reads exactly like a missing one
        raise KeyError(f"You have no history record {item_id}; pick one from your History list.")
    return dict(rows[0])


def get_item(db: HistoryDB, user: str, item_id: str) -> dict:
    """One of `user`'s records in full, as it was shown: answers and costs, scores, messages, or a battle."""
    kind, number = parse_item_id(item_id)
    base = {"id": item_id, "kind": kind}
    if kind == "compare":
        row = _one(db, "SELECT * FROM compares WHERE id = ? AND user = ?", user, number, item_id)
        answers = [{"method": a["method"], "answer": a["answer"], "text": a["text"], "error": a["error"],
                    "finish_reason": a["finish_reason"], "metrics": json.loads(a["metrics"]),
                    "chunks": json.loads(a["chunks"])}
                   for a in db.rows("SELECT * FROM compare_answers WHERE compare_id = ? ORDER BY position", (number,))]
        return base | {"when": _when(row["created"]), "question": row["question"], "document": row["document"],
                       "document_sha256": row["document_sha256"], "model": row["model"],
                       "settings": json.loads(row["settings"]), "answers": answers}
    if kind == "evaluation":
        row = _one(db, "SELECT * FROM evaluations WHERE id = ? AND user = ?", user, number, item_id)
        return base | {"when": _when(row["created"]), "document": row["document"], "model": row["model"],
                       "questions": row["questions"], "settings": json.loads(row["settings"]),
                       "methods": json.loads(row["scores"]), "rows": json.loads(row["rows"])}
    if kind == "arena":
        row = _one(db, "SELECT * FROM arena_transcripts WHERE id = ? AND user = ?", user, number, item_id)
        return base | {"when": _when(row["created"]), "title": row["title"], **json.loads(row["transcript"])}
    row = _one(db, "SELECT b.*, v.winner FROM battles b LEFT JOIN votes v ON v.battle_id = b.id "
                   "WHERE b.id = ? AND b.user = ?", user, number, item_id)
    voted = row["winner"] is not None
    settings = json.loads(row["settings"])
    if not voted:  # which pool entry each side is would name it
        settings = {k: v for k, v in settings.items() if k not in ("a_entry", "b_entry")}
    return base | {"when": _when(row["created"]), "prompt": row["prompt"], "document": row["document"],
                   "settings": settings, "winner": row["winner"],
                   "a": _side(row, "a", voted), "b": _side(row, "b", voted)}


def _side(row: dict, side: str, voted: bool) -> dict:
    """One side of a battle as History shows it: before the vote neither its name nor its real error (which may
    name the model or the method) leaves the server."""
    error = row[f"{side}_error"]
    return {"name": row[f"{side}_name"] if voted else None, "text": row[f"{side}_text"],
            "error": error if voted or not error else HIDDEN_ERROR}


def delete_item(db: HistoryDB, user: str, item_id: str) -> None:
    """Delete one of `user`'s records (a compare with its answers); a battle's vote stays on the leaderboard."""
    kind, number = parse_item_id(item_id)
    table = {"compare": "compares", "evaluation": "evaluations", "arena": "arena_transcripts", "battle": "battles"}[kind]
    with db.write() as cur:
        cur.execute(f"DELETE FROM {table} WHERE id = ? AND user = ?", (number, user))
        if cur.rowcount == 0:
            raise KeyError(f"You have no history record {item_id}; pick one from your History list.")


# ---- export -------------------------------------------------------------------------------------

def write_json(items: Sequence[dict], path: Path) -> Path:
    """Every record in full, as get_item gives it."""
    path.write_text(json.dumps({"history": list(items)}, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path


def write_csv(items: Sequence[dict], path: Path) -> Path:
    """One line per record (EXPORT_FIELDS), as the History list shows it."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(items)
    return path
