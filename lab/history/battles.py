"""Battles: two anonymous contestants answer the same prompt with the same settings; a person votes; then names.

    python app.py   # the Battles tab; `python -m lab arena ratings --json` prints the leaderboard votes feed

A pool lists who may be drawn: Arena model choices (the base model, `<base> + adapter NAME` for a
trained adapter, `endpoint:NAME` for a remote server) and knowledge methods on a chosen document
(`rag`, `cag`, `full`, named `rag on guide.md` on the leaderboard). Two different entries are drawn
at random, in random order, as A and B. Model contestants answer through the Arena's streaming
path, knowledge methods through Compare's, both greedy with the same max_new_tokens, so the only
difference between the answers is the contestant. Who A and B are is kept in the database and
the Engine; what streams to the browser says only "A" or "B" until the vote is in (as in
FastChat's anonymous arena, where a vote after the reveal would not be blind).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the replies' types only: recording and listing battles needs no model library
    from lab.inference.arena import ColumnReply
    from lab.knowledge.compare import MethodUpdate

KNOWLEDGE_METHODS = ("rag", "cag", "full")
"""Pool entries answered by Compare's methods on the battle's document (`base` is the base model itself)."""

SIDES = ("A", "B")


TEAM_POOL = ""
"""The owner of the pool an admin keeps for the whole team (no user name is empty)."""

_KNOWLEDGE_NAME = re.compile(r"^(rag|cag|full) on ")


@dataclass(frozen=True)
class BattleConfig:
    """The settings both contestants answer with."""

    max_new_tokens: int = 96
    """Most tokens either contestant may generate; both decode greedily (temperature 0), so answers are reproducible."""
    top_k: int = 3
    """Chunks a `rag` contestant retrieves from the document."""
    reserve_tokens: int = 256
    """Tokens kept free beside the document for the prompt and the answer (`cag` and `full`); a document that
    leaves fewer in the model's window is refused for those two, as in Compare."""

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a whole number >= 1, got {self.max_new_tokens!r}")
        for name in ("top_k", "reserve_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class Contestant:
    entry: str
    """The pool entry: an Arena model choice, or a knowledge method (rag, cag, full)."""
    name: str
    """Its name on the leaderboard: the model choice itself, or '<method> on <document>'."""

    @property
    def is_knowledge(self) -> bool:
        return self.entry in KNOWLEDGE_METHODS


@dataclass
class SideUpdate:
    """One step of one side's answer, as the browser sees it: never who is answering."""

    side: int
    """0 for A, 1 for B."""
    text: str = ""
    done: bool = False
    error: str | None = None


EMPTY_ANSWER = "empty answer"
"""How a side that finished without a word is shown and named in a refusal."""


def unfair(texts: Sequence[str | None], errors: Sequence[str | None]) -> str | None:
    """Why a battle's answers cannot be voted on, or None: a side that failed or said nothing is no contest, and
    a vote on it would move both ratings on a crash rather than on an answer. Names sides A and B, never who."""
    for side, text, error in zip(SIDES, texts, errors):
        if error:
            return f"Model {side} could not answer, so this battle cannot be voted on; discard it and battle again."
        if not (text or "").strip():
            return (f"Model {side} gave an {EMPTY_ANSWER}, so this battle cannot be voted on; discard it and battle "
                    "again.")
    return None


def contestant(entry: str, document: str) -> Contestant:
    """The contestant a pool entry stands for in a battle on `document` (a knowledge method depends on it)."""
    entry = entry.strip()
    return Contestant(entry, f"{entry} on {document}" if entry in KNOWLEDGE_METHODS else entry)


def is_knowledge_name(name: str) -> bool:
    return bool(_KNOWLEDGE_NAME.match(name))


def check_pool(pool: Sequence[str], offered: Sequence[str]) -> list[str]:
    """The pool without blanks and repeats; at least two entries, each one the lab can run now."""
    entries = list(dict.fromkeys(e.strip() for e in pool if e and e.strip()))
    unknown = [e for e in entries if e not in offered]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} cannot battle here; the pool may hold {', '.join(offered)}.")
    if len(entries) < 2:
        raise ValueError("A battle needs at least two contestants in the pool; tick two or more.")
    return entries


def draw(pool: Sequence[str], document: str, rng: random.Random | None = None) -> tuple[Contestant, Contestant]:
    """Two different contestants from the pool, in random order (A, B)."""
    a, b = (rng or random.SystemRandom()).sample(list(pool), 2)
    return contestant(a, document), contestant(b, document)


def arena_side(side: int, replies: Iterator[ColumnReply]) -> Iterator[SideUpdate]:
    """An Arena column's replies as one side of a battle."""
    for reply in replies:
        yield SideUpdate(side, reply.text, reply.done, reply.error)


def compare_side(side: int, updates: Iterator[MethodUpdate]) -> Iterator[SideUpdate]:
    """A Compare method's updates as one side of a battle: the whole generated text, not just the short answer."""
    for update in updates:
        yield SideUpdate(side, update.text, update.done, update.error)
