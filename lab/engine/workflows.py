"""What one Compare question and one evaluation run do from start to end, the same for the tab and the CLI.

    python -m lab ask --question "What does CAG stand for?" --methods rag,cag     # engine.workflows.ask
    python -m lab eval --set heldout --methods base,rag --limit 5                  # engine.workflows.evaluate

A question streams every method's answer, is kept in the asker's History, and ends with the break-even
sentences (after how many questions CAG's cache and each adapter's training pay for themselves). An evaluation
scores a QA set, saves its JSON and CSV in the user's workspace and keeps it in their History, also when it was
cancelled (what was scored by then). The services below do each step; this module only puts them in order, so
the Compare tab and `python -m lab` cannot drift apart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from lab.core.users import LOCAL_USER
from lab.engine.history import History
from lab.engine.knowledge import Knowledge
from lab.knowledge.configs import CompareConfig
from lab.knowledge.documents import Document

if TYPE_CHECKING:
    from lab.knowledge.compare import MethodUpdate
    from lab.knowledge.evaluation import QAItem

Progress = Callable[[int, int, str], None]


class Workflows:
    """Compare's question and evaluation, each step in one place."""

    def __init__(self, knowledge: Knowledge, history: History) -> None:
        self.knowledge = knowledge
        self.history = history

    def ask(self, doc: Document, question: str, methods: str | Sequence[str], cfg: CompareConfig | None = None,
            caller: str | None = None, user: str = LOCAL_USER) -> Iterator[MethodUpdate | list[str]]:
        """Stream each method's updates (MethodUpdate), then keep the question in `user`'s History and yield, last,
        the break-even sentences (a list of str, empty when no method has a one-off cost)."""
        cfg = cfg or CompareConfig()
        finals: dict[str, MethodUpdate] = {}
        for update in self.knowledge.stream_compare(doc, question, methods, cfg, caller, user=user):
            if update.done:
                finals[update.method] = update
            yield update
        self.history.record_compare(user, doc, question, cfg, list(finals.values()))
        lines = self.knowledge.break_even({u.method: u.metrics for u in finals.values() if not u.error})
        yield [line.sentence() for line in lines]

    def evaluate(self, doc: Document, items: Sequence[QAItem], methods: str | Sequence[str],
                 cfg: CompareConfig | None = None, user: str = LOCAL_USER, progress: Progress | None = None,
                 cancel: threading.Event | None = None, caller: str | None = None,
                 name: str | None = None) -> tuple[dict, tuple[Path, Path]]:
        """Score `items`, save the result as <name>.json and .csv in `user`'s workspace (name: eval-<time> unless
        given) and keep it in their History; the result and the two saved files."""
        cfg = cfg or CompareConfig()
        result = self.knowledge.evaluate(doc, items, methods, cfg, progress, user=user, cancel=cancel, caller=caller)
        saved = self.knowledge.export_evaluation(result, user, name or datetime.now().strftime("eval-%Y%m%d-%H%M%S-%f"))
        self.history.record_evaluation(user, result, cfg)
        return result, saved
