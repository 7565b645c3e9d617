"""The Engine's history operations: what each user compared, evaluated and battled, kept; votes and ratings.

    python -m lab history list --json
    python -m lab arena ratings --json

One SQLite file in the data directory (lab.history.db) holds it all. Every method that reads or
changes a user's records takes that user's name and touches only their rows; votes, the one shared
thing, feed everyone's leaderboard. A battle's contestants stay here until its vote is in.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from lab.core import access
from lab.core.checks import check_question_length
from lab.core.users import check_name, workspace_dir
from lab.engine.arena import ArenaOps
from lab.engine.knowledge import KnowledgeOps
from lab.history import battles, records
from lab.history.battles import BattleConfig, SideUpdate
from lab.history.db import DB_NAME, HistoryDB
from lab.history.ratings import Leaderboard, RatingsConfig, leaderboard
from lab.inference.arena import ArenaColumn, interleave
from lab.inference.generate import GenerationSettings
from lab.knowledge.cag import CagConfig
from lab.knowledge.compare import CompareConfig, MethodUpdate
from lab.knowledge.documents import Document
from lab.knowledge.rag import RagConfig


class HistoryOps(KnowledgeOps, ArenaOps):
    """History, battles and the leaderboard, over one database opened on first use."""
    HISTORY_KINDS = records.KINDS
    BATTLE_WINNERS = records.WINNERS
    KNOWLEDGE_CONTESTANTS = battles.KNOWLEDGE_METHODS
    BATTLE_SIDES = battles.SIDES
    EMPTY_ANSWER = battles.EMPTY_ANSWER
    battle_vote_refusal = staticmethod(battles.unfair)
    """Why answers (texts, errors of A and B) cannot be voted on, or None: the rule `vote` applies, for a UI."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._history_db: HistoryDB | None = None
        self._history_lock = threading.Lock()
        self._board: tuple[tuple, Leaderboard] | None = None  # (the votes it was fitted on, the table)

    @property
    def history_db(self) -> HistoryDB:
        """The database, opened (and migrated) on first use: a page that never touches history opens nothing."""
        with self._history_lock:
            if self._history_db is None:
                self._history_db = HistoryDB(self.settings.data_dir / DB_NAME)
            return self._history_db

    # ---- recording what users did ---------------------------------------------------------------

    def record_compare(self, user: str, doc: Document, question: str, cfg: CompareConfig | None,
                       finals: Sequence[MethodUpdate]) -> str:
        """Keep one Compare question with each method's final answer and costs; returns its id (compare-N)."""
        cfg = cfg or CompareConfig()
        spec = self.spec(cfg.model_id, cfg.load_in_4bit)
        answers = [{"method": u.method, "answer": u.answer, "text": u.text, "error": u.error,
                    "finish_reason": u.finish_reason, "metrics": u.metrics,
                    "chunks": [{"chunk_id": c.chunk_id, "score": round(c.score, 4), "text": c.text} for c in u.chunks]}
                   for u in finals if u.done]
        return records.add_compare(self.history_db, check_name(user, "User name"), question.strip(), doc.name,
                                   doc.sha256, spec.model_id, asdict(cfg) | {"load_in_4bit": spec.load_in_4bit},
                                   answers)

    def record_evaluation(self, user: str, result: dict, cfg: CompareConfig | None = None) -> str:
        """Keep an evaluation run (its settings, per-method scores and rows); returns its id (evaluation-N)."""
        cfg = cfg or CompareConfig()
        settings = asdict(cfg) | {"elapsed_s": result.get("elapsed_s"), "load_in_4bit": result.get("load_in_4bit"),
                                  # a cancelled run is kept too: say so, and how far it got
                                  "cancelled": result.get("cancelled", False), "answered": result.get("answered")}
        return records.add_evaluation(self.history_db, check_name(user, "User name"), result, settings)

    def record_arena(self, user: str, columns: Sequence[ArenaColumn], histories: Sequence[list[dict]]) -> str:
        """Keep an Arena session's transcript; titled by its first prompt."""
        first = next((m["content"] for h in histories for m in h if m.get("role") == "user"), "(empty chat)")
        transcript = self.arena_transcript_json(columns, histories)
        return records.add_arena(self.history_db, check_name(user, "User name"), first[:200],
                                 json.loads(transcript))

    # ---- a user's history -----------------------------------------------------------------------

    def history_list(self, user: str, search: str = "", kinds: Sequence[str] = records.KINDS) -> list[dict]:
        """`user`'s records newest first (id, kind, when, title, detail); only theirs."""
        return records.list_items(self.history_db, check_name(user, "User name"), search, kinds)

    def history_item(self, user: str, item_id: str) -> dict:
        """One of `user`'s records in full: answers with costs and settings, scores, messages or a battle."""
        return records.get_item(self.history_db, check_name(user, "User name"), item_id)

    def delete_history(self, user: str, item_id: str) -> None:
        """Delete one of `user`'s records; a battle's vote stays on the shared leaderboard."""
        records.delete_item(self.history_db, check_name(user, "User name"), item_id)

    def export_history(self, user: str, name: str, search: str = "") -> tuple[Path, Path]:
        """Write `user`'s records matching `search` as <name>.json (in full) and <name>.csv (one line each) in
        their workspace's history/ folder."""
        items = self.history_list(user, search)
        folder = workspace_dir(self.settings, user, "history")
        stem = check_name(name, "Export name")
        access.check_workspace_quota(self.settings, user)
        written = (records.write_json([self.history_item(user, item["id"]) for item in items], folder / f"{stem}.json"),
                   records.write_csv(items, folder / f"{stem}.csv"))
        self._keep_within_quota(user, written)
        return written

    # ---- battles --------------------------------------------------------------------------------

    def battle_choices(self) -> list[str]:
        """What a pool may hold: every Arena model choice and the knowledge methods (rag, cag, full)."""
        return [*self.arena_models(), *battles.KNOWLEDGE_METHODS]

    def battle_pool(self, user: str) -> list[str]:
        """The pool `user` kept, else the one an admin keeps for the team, else every choice; entries the lab
        can no longer run (a deleted adapter) are left out."""
        offered = self.battle_choices()
        for owner in (check_name(user, "User name"), battles.TEAM_POOL):
            kept = records.pool(self.history_db, owner)
            if kept is not None:
                return [entry for entry in kept if entry in offered]
        return offered

    def save_battle_pool(self, user: str, pool: Sequence[str], team: bool = False) -> list[str]:
        """Keep a pool for `user`'s next battles, or (admins only, LAB_ADMINS) as the team's default pool."""
        entries = battles.check_pool(pool, self.battle_choices())
        if team and user not in self.settings.admin_names():
            raise PermissionError(f"Only an admin (LAB_ADMINS) can set the team's battle pool; {user} can keep "
                                  "their own pool instead.")
        records.save_pool(self.history_db, battles.TEAM_POOL if team else check_name(user, "User name"), entries)
        return entries

    def _battle_document(self, user: str, document: str | None) -> Document:
        """The document knowledge contestants answer from: one of `user`'s uploads, or the bundled guide."""
        return self.open_upload(user, document) if document else self.bundled_document()

    def start_battle(self, user: str, pool: Sequence[str], prompt: str, document: str | None = None,
                     cfg: BattleConfig | None = None) -> int:
        """Draw two contestants from the pool and keep the battle; returns its number. The names stay here."""
        user, cfg = check_name(user, "User name"), cfg or BattleConfig()
        if not prompt or not prompt.strip():
            raise ValueError("The prompt is empty; type a question for both contestants.")
        check_question_length(prompt, "The prompt")
        entries = battles.check_pool(pool, self.battle_choices())
        doc = self._battle_document(user, document)
        a, b = battles.draw(entries, doc.name)
        settings = asdict(cfg) | {"a_entry": a.entry, "b_entry": b.entry, "upload": document}
        return records.add_battle(self.history_db, user, prompt.strip(), doc.name, settings, a.name, b.name)

    def _side(self, side: int, entry: str, prompt: str, doc: Document, cfg: BattleConfig, caller: str,
              user: str) -> Iterator[SideUpdate]:
        if entry in battles.KNOWLEDGE_METHODS:  # Compare's path, the whole answer (no stop at the short answer)
            compare_cfg = CompareConfig(max_new_tokens=cfg.max_new_tokens, stop_at_answer=False,
                                        rag=RagConfig(top_k=cfg.top_k), cag=CagConfig(cfg.reserve_tokens))
            return battles.compare_side(side, self.stream_compare(doc, prompt, [entry], compare_cfg, caller, user=user))
        column = ArenaColumn(entry, GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0))
        return battles.arena_side(side, self.stream_arena(prompt, [column], [[]], caller, user=user))

    def stream_battle(self, user: str, number: int, caller: str | None = None) -> Iterator[SideUpdate]:
        """Stream both answers of `user`'s battle at once (updates say A or B, never who: an error's own message,
        which may name the model, waits for the vote), then keep them."""
        row = records.battle_row(self.history_db, check_name(user, "User name"), number)
        if row["answered"]:
            raise ValueError(f"Battle {number} has already been answered; vote, or start a new battle.")
        settings = json.loads(row["settings"])
        cfg = BattleConfig(**{k: settings[k] for k in ("max_new_tokens", "top_k", "reserve_tokens")})
        doc = self._battle_document(user, settings.get("upload"))
        caller = caller or self.sessions.new_caller("battle")
        texts, errors = ["", ""], [None, None]
        streams = [self._side(i, settings[f"{side}_entry"], row["prompt"], doc, cfg, caller, user)
                   for i, side in enumerate("ab")]
        for update in interleave(streams):
            texts[update.side], errors[update.side] = update.text, update.error
            yield replace(update, error=battles.HIDDEN_ERROR) if update.error else update
        records.finish_battle(self.history_db, user, number, texts, errors)

    def vote(self, user: str, number: int, winner: str) -> dict:
        """`user`'s vote on their own answered battle; returns what was hidden: {"a", "b", "winner", "a_error",
        "b_error"} (names, and why a side could not answer). A battle where a side failed or gave an empty answer
        is refused (battles.unfair): it can only be discarded."""
        row = records.battle_row(self.history_db, check_name(user, "User name"), number)
        if not row["answered"]:
            raise ValueError(f"Battle {number} has not finished answering; wait for both answers, then vote.")
        if row["winner"] is None and (why := battles.unfair((row["a_text"], row["b_text"]),
                                                            (row["a_error"], row["b_error"]))):
            raise ValueError(why)
        records.add_vote(self.history_db, user, row["a_name"], row["b_name"], winner, battle=number)
        return self._reveal(row, winner)

    def discard_battle(self, user: str, number: int) -> dict:
        """Drop `user`'s battle without a vote (one side failed or said nothing, or neither answer is worth judging):
        nothing is recorded and it leaves their History. Returns who was who (winner None): with no vote to come,
        nothing needs hiding any more."""
        row = records.battle_row(self.history_db, check_name(user, "User name"), number)
        if row["winner"] is not None:
            raise ValueError(f"Battle {number} already has your vote; delete it from your History instead.")
        records.delete_item(self.history_db, user, f"battle-{number}")
        return self._reveal(row, None)

    @staticmethod
    def _reveal(row: dict, winner: str | None) -> dict:
        return {"a": row["a_name"], "b": row["b_name"], "winner": winner, "a_error": row["a_error"],
                "b_error": row["b_error"]}

    def record_vote(self, user: str, a: str, b: str, winner: str) -> int:
        """A vote between two named contestants without a battle here (`python -m lab arena vote`)."""
        return records.add_vote(self.history_db, check_name(user, "User name"), a, b, winner)

    def ratings(self, cfg: RatingsConfig | None = None) -> Leaderboard:
        """The shared leaderboard: Bradley–Terry ratings with bootstrap intervals over every user's votes.
        Refitted only when votes have been added since the last call (the bootstrap takes a moment)."""
        cfg = cfg or RatingsConfig()
        votes = records.all_votes(self.history_db)
        key = (len(votes), hash(tuple(votes)), cfg)
        board = self._board
        if board is not None and board[0] == key:
            return board[1]
        fitted = leaderboard(votes, cfg)
        self._board = (key, fitted)
        return fitted
