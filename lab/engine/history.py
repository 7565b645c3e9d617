"""History: what each user compared, evaluated and chatted in the Arena, kept, searched, exported, deleted.

    python -m lab history list --json

One SQLite file in the data directory (lab.history.db) holds it all, opened on first use; battles and votes
(lab/engine/battles.py) live in the same file. Every method that reads or changes a user's records takes that
user's name and touches only their rows.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from lab.core import access, names
from lab.core.users import workspace_dir
from lab.engine.uploads import Uploads
from lab.history import records
from lab.history.db import DB_NAME, HistoryDB
from lab.inference.runtime import Runtime
from lab.knowledge.configs import CompareConfig
from lab.knowledge.documents import Document

if TYPE_CHECKING:
    from lab.inference.arena import ArenaColumn
    from lab.knowledge.compare import MethodUpdate


class History:
    """Each user's records, over one database opened on first use."""
    KINDS = records.KINDS

    def __init__(self, runtime: Runtime, uploads: Uploads) -> None:
        self.runtime, self.settings, self.uploads = runtime, runtime.settings, uploads
        self._db: HistoryDB | None = None
        self._db_lock = threading.Lock()

    @property
    def db(self) -> HistoryDB:
        """The database, opened (and migrated) on first use: a page that never touches history opens nothing."""
        with self._db_lock:
            if self._db is None:
                self._db = HistoryDB(self.settings.data_dir / DB_NAME)
            return self._db

    # ---- recording what users did -----------------------------------------------------------------------------
    def record_compare(self, user: str, doc: Document, question: str, cfg: CompareConfig | None,
                       finals: Sequence[MethodUpdate]) -> str:
        """Keep one Compare question with each method's final answer and costs; returns its id (compare-N)."""
        cfg = cfg or CompareConfig()
        spec = self.runtime.spec(cfg.model_id, cfg.load_in_4bit)
        answers = [{"method": u.method, "answer": u.answer, "text": u.text, "error": u.error,
                    "finish_reason": u.finish_reason, "metrics": u.metrics,
                    "chunks": [{"chunk_id": c.chunk_id, "score": round(c.score, 4), "text": c.text} for c in u.chunks]}
                   for u in finals if u.done]
        return records.add_compare(self.db, names.user_name(user), question.strip(), doc.name,
                                   doc.sha256, spec.model_id, asdict(cfg) | {"load_in_4bit": spec.load_in_4bit},
                                   answers)

    def record_evaluation(self, user: str, result: dict, cfg: CompareConfig | None = None) -> str:
        """Keep an evaluation run (its settings, per-method scores and rows); returns its id (evaluation-N)."""
        cfg = cfg or CompareConfig()
        settings = asdict(cfg) | {"elapsed_s": result.get("elapsed_s"), "load_in_4bit": result.get("load_in_4bit"),
                                  # a cancelled run is kept too: say so, and how far it got
                                  "cancelled": result.get("cancelled", False), "answered": result.get("answered")}
        return records.add_evaluation(self.db, names.user_name(user), result, settings)

    def record_arena(self, user: str, columns: Sequence[ArenaColumn], histories: Sequence[list[dict]]) -> str:
        """Keep an Arena session's transcript; titled by its first prompt."""
        from lab.inference.arena import transcript_json  # its module imports torch; the history commands do not

        first = next((m["content"] for h in histories for m in h if m.get("role") == "user"), "(empty chat)")
        return records.add_arena(self.db, names.user_name(user), first[:200],
                                 json.loads(transcript_json(columns, histories)))

    # ---- a user's history -------------------------------------------------------------------------------------
    def items(self, user: str, search: str = "", kinds: Sequence[str] = records.KINDS) -> list[dict]:
        """`user`'s records newest first (id, kind, when, title, detail); only theirs."""
        return records.list_items(self.db, names.user_name(user), search, kinds)

    def item(self, user: str, item_id: str) -> dict:
        """One of `user`'s records in full: answers with costs and settings, scores, messages or a battle."""
        return records.get_item(self.db, names.user_name(user), item_id)

    def delete(self, user: str, item_id: str) -> None:
        """Delete one of `user`'s records; a battle's vote stays on the shared leaderboard."""
        records.delete_item(self.db, names.user_name(user), item_id)

    def export(self, user: str, name: str, search: str = "") -> tuple[Path, Path]:
        """Write `user`'s records matching `search` as <name>.json (in full) and <name>.csv (one line each) in
        their workspace's history/ folder."""
        items = self.items(user, search)
        folder = workspace_dir(self.settings, user, "history")
        stem = names.file_name(name, "Export name")
        access.check_workspace_quota(self.settings, user)
        written = (records.write_json([self.item(user, item["id"]) for item in items], folder / f"{stem}.json"),
                   records.write_csv(items, folder / f"{stem}.csv"))
        self.uploads.keep_within_quota(user, written)
        return written
