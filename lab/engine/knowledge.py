"""The Engine's knowledge operations: documents, Compare's streamed answers, evaluations and their exports."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from lab.core import access
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA
from lab.core.users import LOCAL_USER, check_name, workspace_dir
from lab.engine.training import Progress, TrainingOps
from lab.inference import adapters
from lab.knowledge import breakeven, compare, evaluation
from lab.knowledge.compare import CompareConfig, MethodUpdate
from lab.knowledge.documents import Document, load_document


class KnowledgeOps(TrainingOps):
    """Compare and evaluation over a document; `ft:<adapter>` methods come from the trained adapters."""
    METHODS = compare.METHODS
    """Knowledge methods that need no adapter; `ft:<adapter>` adds a fine-tuned one."""
    SCORES = evaluation.SCORES
    BUNDLED_QA = BUNDLED_QA

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Evaluations in progress, by a number of their own: who runs it, how far it got, whether it was cancelled.
        # Read by stats(), so a page (or a test) can see that a closed page's evaluation really ended.
        self._evaluations: dict[int, tuple[dict, threading.Event]] = {}
        self._evaluation_numbers = itertools.count(1)
        self._evaluations_lock = threading.Lock()

    def stats(self) -> dict:
        """The session manager's stats, plus the evaluations running now (user, answered, answers, cancelled)."""
        with self._evaluations_lock:
            running = [entry | {"cancelled": cancel.is_set()} for entry, cancel in self._evaluations.values()]
        return super().stats() | {"evaluations": running}

    def bundled_document(self) -> Document:
        return load_document(BUNDLED_DOC)

    load_document = staticmethod(load_document)

    def compare_methods(self, include_sweeps: bool = False) -> list[str]:
        """What Compare offers: the plain methods and one `ft:<name>` per trained adapter (a sweep's adapters only
        with include_sweeps; any adapter can still be run by its name)."""
        return [*compare.METHODS, *(f"{compare.ADAPTER_PREFIX}{name}" for name in self.adapter_names(include_sweeps))]

    def compare_method_labels(self, include_sweeps: bool = False) -> list[tuple[str, str]]:
        """compare_methods as (what the list shows, the method): an adapter's says what it is (adapter_summary)."""
        listed = sorted(self.list_adapters(include_sweeps), key=lambda a: a.name)  # one listing, as compare_methods
        return [*((m, m) for m in compare.METHODS),
                *((f"{compare.ADAPTER_PREFIX}{a.name} — {self.adapter_summary(a)}", f"{compare.ADAPTER_PREFIX}{a.name}")
                  for a in listed)]

    def stream_compare(self, doc: Document, question: str, methods: str | Sequence[str], cfg: CompareConfig | None = None,
                caller: str | None = None, user: str = LOCAL_USER) -> Iterator[MethodUpdate]:
        """Stream every method's answer to one question about `doc`, with its costs."""
        self._check_compare_access(methods, cfg, user)
        return compare.stream_compare(self, doc, question, methods, cfg, caller=caller)

    def _check_compare_access(self, methods: str | Sequence[str], cfg: CompareConfig | None, user: str) -> None:
        """Refuse, before anything runs, a model folder (cfg.model_id) or `ft:` adapter folder `user` may not read."""
        if user == LOCAL_USER:
            return
        self.check_model_access(cfg.model_id if cfg else None, user)
        for name in compare.parse_methods(methods):
            if name.startswith(compare.ADAPTER_PREFIX):
                access.allowed_adapter(self.settings, user, name[len(compare.ADAPTER_PREFIX):])

    load_qa = staticmethod(evaluation.load_qa)

    def evaluation_items(self, doc: Document, qa_file: str | Path | None, limit: int | None = None
                         ) -> list[evaluation.QAItem]:
        """The questions an evaluation of `doc` asks: `qa_file`'s, or the bundled set when `doc` is the bundled
        guide; any other document without a QA file is refused, saying what file to give."""
        return evaluation.questions_for(doc, qa_file, limit)

    def evaluate(self, doc: Document, items: Sequence[evaluation.QAItem], methods: str | Sequence[str],
                 cfg: CompareConfig | None = None, progress: Progress | None = None, user: str = LOCAL_USER,
                 cancel: threading.Event | None = None, caller: str | None = None) -> dict:
        """Score a QA set through several methods (exact match, F1, ROUGE-L, BLEU, latency). Setting `cancel`
        stops it within the answer in progress; the result keeps the rows scored so far and says cancelled.
        `caller` (new_caller) names its requests; by default one of `user`'s."""
        self._check_compare_access(methods, cfg, user)
        cancel = cancel or threading.Event()
        number = next(self._evaluation_numbers)
        entry = {"user": user, "answered": 0, "answers": None}

        def track(done: int, total: int, message: str) -> None:
            with self._evaluations_lock:
                entry.update(answered=done, answers=total)
            if progress:
                progress(done, total, message)

        with self._evaluations_lock:
            self._evaluations[number] = (entry, cancel)
        try:
            return evaluation.evaluate(self, doc, items, methods, cfg, track, cancel,
                                       caller or self.sessions.new_caller("eval", user))
        finally:
            with self._evaluations_lock:
                del self._evaluations[number]

    def export_evaluation(self, result: dict, user: str, name: str) -> tuple[Path, Path]:
        """Write an evaluation as <name>.json and <name>.csv in `user`'s workspace, where it stays."""
        folder = workspace_dir(self.settings, user, "evaluations")
        stem = check_name(name, "Export name")
        access.check_workspace_quota(self.settings, user)  # already full: refused before anything is written
        written = (evaluation.write_json(result, folder / f"{stem}.json"),
                   evaluation.write_csv(result["rows"], folder / f"{stem}.csv"))
        self._keep_within_quota(user, written)
        return written

    def evaluations(self, user: str) -> list[Path]:
        """The evaluation exports (JSON and CSV) kept in `user`'s workspace, newest first."""
        folder = workspace_dir(self.settings, user, "evaluations")
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".csv")]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)

    # Anywhere the caller chooses (the command line's --out and --csv); a tab uses export_evaluation.
    write_evaluation_json = staticmethod(evaluation.write_json)
    write_evaluation_csv = staticmethod(evaluation.write_csv)

    def break_even(self, metrics: dict[str, dict]) -> list[breakeven.BreakEven]:
        """After how many questions CAG's cache build and each adapter's training have paid for themselves against
        full context, from one question's card metrics (method -> metrics). An adapter's one-off cost is the time
        its job trained (started to finished); adapters without a finished job are left out."""
        training_s = {}
        for method in metrics:
            if method.startswith(compare.ADAPTER_PREFIX):
                seconds = adapters.training_seconds(self.settings.data_dir, method[len(compare.ADAPTER_PREFIX):])
                if seconds is not None:
                    training_s[method] = seconds
        return breakeven.break_even_lines(metrics, training_s)
