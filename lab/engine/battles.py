"""Battles and the leaderboard: two hidden contestants answer one prompt, the user votes, ratings follow.

    python -m lab arena ratings --json

A battle's contestants (Arena models or the knowledge methods rag, cag, full) stay in the history database
until its vote is in; what streams to the browser says only A or B. Votes, the one shared thing, feed
everyone's leaderboard.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, replace
from typing import cast

from lab.core import names
from lab.core.checks import check_question_length
from lab.engine.arena import Arena
from lab.engine.history import History
from lab.engine.knowledge import Knowledge
from lab.engine.uploads import Uploads
from lab.history import battles, records
from lab.history.battles import BattleConfig, SideUpdate
from lab.history.ratings import Leaderboard, RatingsConfig, leaderboard
from lab.inference.configs import GenerationSettings
from lab.inference.runtime import Runtime
from lab.knowledge.configs import CagConfig, CompareConfig, RagConfig
from lab.knowledge.documents import Document


class Battles:
    """Blind battles kept in the history database, and the ratings fitted on every user's votes."""
    WINNERS = records.WINNERS
    KNOWLEDGE_CONTESTANTS = battles.KNOWLEDGE_METHODS
    SIDES = battles.SIDES
    EMPTY_ANSWER = battles.EMPTY_ANSWER

    def __init__(self, runtime: Runtime, history: History, uploads: Uploads, knowledge: Knowledge,
                 arena: Arena) -> None:
        self.runtime, self.settings = runtime, runtime.settings
        self.history, self.uploads, self.knowledge, self.arena = history, uploads, knowledge, arena
        self._board: tuple[tuple, Leaderboard] | None = None  # (the votes it was fitted on, the table)

    def vote_refusal(self, texts: Sequence[str | None], errors: Sequence[str | None]) -> str | None:
        """Why answers (texts, errors of A and B) cannot be voted on, or None: the rule `vote` applies, for a UI."""
        return battles.unfair(texts, errors)

    # ---- pools ------------------------------------------------------------------------------------------------
    def choices(self) -> list[str]:
        """What a pool may hold: every Arena model choice and the knowledge methods (rag, cag, full)."""
        return [*self.arena.choices(), *battles.KNOWLEDGE_METHODS]

    def pool(self, user: str) -> list[str]:
        """The pool `user` kept, else the one an admin keeps for the team, else every choice; entries the lab
        can no longer run (a deleted adapter) are left out."""
        offered = self.choices()
        for owner in (names.user_name(user), battles.TEAM_POOL):
            kept = records.pool(self.history.db, owner)
            if kept is not None:
                return [entry for entry in kept if entry in offered]
        return offered

    def save_pool(self, user: str, pool: Sequence[str], team: bool = False) -> list[str]:
        """Keep a pool for `user`'s next battles, or (admins only, LAB_ADMINS) as the team's default pool."""
        entries = battles.check_pool(pool, self.choices())
        if team and user not in self.settings.admin_names():
            raise PermissionError(f"Only an admin (LAB_ADMINS) can set the team's battle pool; {user} can keep "
                                  "their own pool instead.")
        records.save_pool(self.history.db, battles.TEAM_POOL if team else names.user_name(user), entries)
        return entries

    # ---- one battle -------------------------------------------------------------------------------------------
    def _document(self, user: str, document: str | None) -> Document:
        """The document knowledge contestants answer from: one of `user`'s uploads, or the bundled guide."""
        return self.uploads.open(user, document) if document else self.knowledge.bundled_document()

    def start(self, user: str, pool: Sequence[str], prompt: str, document: str | None = None,
              cfg: BattleConfig | None = None) -> int:
        """Draw two contestants from the pool and keep the battle; returns its number. The names stay here."""
        user, cfg = names.user_name(user), cfg or BattleConfig()
        if not prompt or not prompt.strip():
            raise ValueError("The prompt is empty; type a question for both contestants.")
        check_question_length(prompt, "The prompt")
        entries = battles.check_pool(pool, self.choices())
        doc = self._document(user, document)
        a, b = battles.draw(entries, doc.name)
        settings = asdict(cfg) | {"a_entry": a.entry, "b_entry": b.entry, "upload": document}
        return records.add_battle(self.history.db, user, prompt.strip(), doc.name, settings, a.name, b.name)

    def _side(self, side: int, entry: str, prompt: str, doc: Document, cfg: BattleConfig, caller: str,
              user: str) -> Iterator[SideUpdate]:
        from lab.inference.arena import ArenaColumn  # model work: its module imports torch

        if entry in battles.KNOWLEDGE_METHODS:  # Compare's path, the whole answer (no stop at the short answer)
            compare_cfg = CompareConfig(max_new_tokens=cfg.max_new_tokens, stop_at_answer=False,
                                        rag=RagConfig(top_k=cfg.top_k), cag=CagConfig(cfg.reserve_tokens))
            return battles.compare_side(side, self.knowledge.stream_compare(doc, prompt, [entry], compare_cfg, caller,
                                                                            user=user))
        column = ArenaColumn(entry, GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0))
        return battles.arena_side(side, self.arena.stream(prompt, [column], [[]], caller, user=user))

    def stream(self, user: str, number: int, caller: str | None = None) -> Iterator[SideUpdate]:
        """Stream both answers of `user`'s battle at once (updates say A or B, never who: an error's own message,
        which may name the model, waits for the vote), then keep them."""
        from lab.inference.arena import interleave

        row = records.battle_row(self.history.db, names.user_name(user), number)
        if row["answered"]:
            raise ValueError(f"Battle {number} has already been answered; vote, or start a new battle.")
        settings = json.loads(row["settings"])
        cfg = BattleConfig(**{k: settings[k] for k in ("max_new_tokens", "top_k", "reserve_tokens")})
        doc = self._document(user, settings.get("upload"))
        caller = caller or self.runtime.sessions.new_caller("battle")
        texts: list[str] = ["", ""]
        errors: list[str | None] = [None, None]
        # arena_side and compare_side are generators (annotated as iterators); interleave closes each one it ends
        streams = [cast("Generator[SideUpdate, None, None]",
                        self._side(i, settings[f"{side}_entry"], row["prompt"], doc, cfg, caller, user))
                   for i, side in enumerate("ab")]
        for update in interleave(streams):
            texts[update.side], errors[update.side] = update.text, update.error
            yield replace(update, error=records.HIDDEN_ERROR) if update.error else update
        records.finish_battle(self.history.db, user, number, texts, errors)

    def vote(self, user: str, number: int, winner: str) -> dict:
        """`user`'s vote on their own answered battle; returns what was hidden: {"a", "b", "winner", "a_error",
        "b_error"} (names, and why a side could not answer). A battle where a side failed or gave an empty answer
        is refused (battles.unfair): it can only be discarded."""
        row = records.battle_row(self.history.db, names.user_name(user), number)
        if not row["answered"]:
            raise ValueError(f"Battle {number} has not finished answering; wait for both answers, then vote.")
        if row["winner"] is None and (why := battles.unfair((row["a_text"], row["b_text"]),
                                                            (row["a_error"], row["b_error"]))):
            raise ValueError(why)
        records.add_vote(self.history.db, user, row["a_name"], row["b_name"], winner, battle=number)
        return _reveal(row, winner)

    def discard(self, user: str, number: int) -> dict:
        """Drop `user`'s battle without a vote (one side failed or said nothing, or neither answer is worth judging):
        nothing is recorded and it leaves their History. Returns who was who (winner None): with no vote to come,
        nothing needs hiding any more."""
        row = records.battle_row(self.history.db, names.user_name(user), number)
        if row["winner"] is not None:
            raise ValueError(f"Battle {number} already has your vote; delete it from your History instead.")
        records.delete_item(self.history.db, user, f"battle-{number}")
        return _reveal(row, None)

    # ---- votes and ratings ------------------------------------------------------------------------------------
    def record_vote(self, user: str, a: str, b: str, winner: str) -> int:
        """A vote between two named contestants without a battle here (`python -m lab arena vote`)."""
        return records.add_vote(self.history.db, names.user_name(user), a, b, winner)

    def ratings(self, cfg: RatingsConfig | None = None) -> Leaderboard:
        """The shared leaderboard: Bradley–Terry ratings with bootstrap intervals over every user's votes.
        Refitted only when votes have been added since the last call (the bootstrap takes a moment)."""
        cfg = cfg or RatingsConfig()
        votes = records.all_votes(self.history.db)
        key = (len(votes), hash(tuple(votes)), cfg)
        board = self._board
        if board is not None and board[0] == key:
            return board[1]
        fitted = leaderboard(votes, cfg)
        self._board = (key, fitted)
        return fitted


def _reveal(row: dict, winner: str | None) -> dict:
    return {"a": row["a_name"], "b": row["b_name"], "winner": winner, "a_error": row["a_error"],
            "b_error": row["b_error"]}
