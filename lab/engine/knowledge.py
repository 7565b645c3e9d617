"""Knowledge: documents, Compare's streamed answers, evaluations and their exports, the break-even lines.

    python -m lab ask --question "What is LoRA?" --methods base,rag,cag,full

Compare and evaluation run over a document through the shared Runtime; `ft:<adapter>` methods come from the
trained adapters, and a user may name only the model and adapter folders they may read.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab.core import access, names
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA
from lab.core.users import LOCAL_USER, workspace_dir
from lab.engine.adapters import Adapters
from lab.engine.jobs import Progress
from lab.engine.uploads import Uploads
from lab.inference.runtime import Runtime
from lab.knowledge import breakeven
from lab.knowledge.configs import ADAPTER_PREFIX, METHODS, CompareConfig
from lab.knowledge.documents import Document, load_document

if TYPE_CHECKING:
    from lab.knowledge.compare import MethodUpdate
    from lab.knowledge.evaluation import QAItem


class Knowledge:
    """Compare and evaluation over a document, and the evaluations running now.

    lab.knowledge.compare and evaluation import torch (through the adapters and the session manager), so they are
    imported inside the methods that run them; the names and configs come from lab.knowledge.configs.
    """
    METHODS = METHODS
    """Knowledge methods that need no adapter; `ft:<adapter>` adds a fine-tuned one."""
    BUNDLED_QA = BUNDLED_QA

    def __init__(self, runtime: Runtime, uploads: Uploads, adapters: Adapters) -> None:
        self.runtime, self.settings, self.uploads, self.adapters = runtime, runtime.settings, uploads, adapters
        # Evaluations in progress, by a number of their own: who runs it, how far it got, whether it was cancelled.
        # Read by running_evaluations, so a page (or a test) can see that a closed page's evaluation really ended.
        self._evaluations: dict[int, tuple[dict, threading.Event]] = {}
        self._evaluation_numbers = itertools.count(1)
        self._evaluations_lock = threading.Lock()

    @property
    def SCORES(self) -> tuple[str, ...]:
        """The scores an evaluation reports (lab.knowledge.evaluation.SCORES), read when asked for."""
        from lab.knowledge.evaluation import SCORES

        return SCORES

    def running_evaluations(self) -> list[dict]:
        """The evaluations running now (user, answered, answers, cancelled)."""
        with self._evaluations_lock:
            return [entry | {"cancelled": cancel.is_set()} for entry, cancel in self._evaluations.values()]

    # ---- documents and methods --------------------------------------------------------------------------------
    def bundled_document(self) -> Document:
        return load_document(BUNDLED_DOC)

    def load_document(self, path: str | Path) -> Document:
        """A document file (md, txt, pdf) the caller may read (the command line's --doc)."""
        return load_document(path)

    def compare_methods(self, include_sweeps: bool = False) -> list[str]:
        """What Compare offers: the plain methods and one `ft:<name>` per trained adapter (a sweep's adapters only
        with include_sweeps; any adapter can still be run by its name)."""
        return [*METHODS, *(f"{ADAPTER_PREFIX}{name}" for name in self.adapters.names(include_sweeps))]

    def compare_method_labels(self, include_sweeps: bool = False) -> list[tuple[str, str]]:
        """compare_methods as (what the list shows, the method): an adapter's says what it is (Adapters.summary)."""
        listed = sorted(self.adapters.all(include_sweeps), key=lambda a: a.name)  # one listing, as compare_methods
        prefix = ADAPTER_PREFIX
        return [*((m, m) for m in METHODS),
                *((f"{prefix}{a.name} — {self.adapters.summary(a)}", f"{prefix}{a.name}") for a in listed)]

    # ---- Compare ----------------------------------------------------------------------------------------------
    def stream_compare(self, doc: Document, question: str, methods: str | Sequence[str],
                       cfg: CompareConfig | None = None, caller: str | None = None,
                       user: str = LOCAL_USER) -> Iterator[MethodUpdate]:
        """Stream every method's answer to one question about `doc`, with its costs."""
        from lab.knowledge import compare

        self._check_access(methods, cfg, user)
        return compare.stream_compare(self.runtime, doc, question, methods, cfg, caller=caller)

    def _check_access(self, methods: str | Sequence[str], cfg: CompareConfig | None, user: str) -> None:
        """Refuse, before anything runs, a model folder (cfg.model_id) or `ft:` adapter folder `user` may not read."""
        if user == LOCAL_USER:
            return
        from lab.knowledge.compare import parse_methods

        self.uploads.check_model_access(cfg.model_id if cfg else None, user)
        for name in parse_methods(methods):
            if name.startswith(ADAPTER_PREFIX):
                access.allowed_adapter(self.settings, user, name[len(ADAPTER_PREFIX):])

    # ---- evaluation -------------------------------------------------------------------------------------------
    def load_qa(self, path: str | Path, limit: int | None = None) -> list[QAItem]:
        """A QA JSONL file's items, the first `limit` of them; a malformed line is refused naming the line."""
        from lab.knowledge import evaluation

        return evaluation.load_qa(path, limit)

    def evaluation_items(self, doc: Document, qa_file: str | Path | None, limit: int | None = None
                         ) -> list[QAItem]:
        """The questions an evaluation of `doc` asks: `qa_file`'s, or the bundled set when `doc` is the bundled
        guide; any other document without a QA file is refused, saying what file to give."""
        from lab.knowledge import evaluation

        return evaluation.questions_for(doc, qa_file, limit)

    def evaluate(self, doc: Document, items: Sequence[QAItem], methods: str | Sequence[str],
                 cfg: CompareConfig | None = None, progress: Progress | None = None, user: str = LOCAL_USER,
                 cancel: threading.Event | None = None, caller: str | None = None) -> dict:
        """Score a QA set through several methods (exact match, F1, ROUGE-L, BLEU, latency). Setting `cancel`
        stops it within the answer in progress; the result keeps the rows scored so far and says cancelled.
        `caller` (Requests.new_caller) names its requests; by default one of `user`'s."""
        from lab.knowledge import evaluation

        self._check_access(methods, cfg, user)
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
            return evaluation.evaluate(self.runtime, doc, items, methods, cfg, track, cancel,
                                       caller or self.runtime.sessions.new_caller("eval", user))
        finally:
            with self._evaluations_lock:
                del self._evaluations[number]

    def export_evaluation(self, result: dict, user: str, name: str) -> tuple[Path, Path]:
        """Write an evaluation as <name>.json and <name>.csv in `user`'s workspace, where it stays."""
        from lab.knowledge import evaluation

        folder = workspace_dir(self.settings, user, "evaluations")
        stem = names.file_name(name, "Export name")
        access.check_workspace_quota(self.settings, user)  # already full: refused before anything is written
        written = (evaluation.write_json(result, folder / f"{stem}.json"),
                   evaluation.write_csv(result["rows"], folder / f"{stem}.csv"))
        self.uploads.keep_within_quota(user, written)
        return written

    def evaluations(self, user: str) -> list[Path]:
        """The evaluation exports (JSON and CSV) kept in `user`'s workspace, newest first."""
        folder = workspace_dir(self.settings, user, "evaluations")
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".csv")]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)

    # Anywhere the caller chooses (the command line's --out and --csv); a tab uses export_evaluation.
    def write_evaluation_json(self, result: dict, path: str | Path) -> Path:
        from lab.knowledge import evaluation

        return evaluation.write_json(result, path)

    def write_evaluation_csv(self, rows: Sequence[dict], path: str | Path) -> Path:
        from lab.knowledge import evaluation

        return evaluation.write_csv(rows, path)

    def break_even(self, metrics: dict[str, dict]) -> list[breakeven.BreakEven]:
        """After how many questions CAG's cache build and each adapter's training have paid for themselves against
        full context, from one question's card metrics (method -> metrics). An adapter's one-off cost is the time
        its job trained (started to finished); adapters without a finished job are left out."""
        training_s = {}
        for method in metrics:
            if method.startswith(ADAPTER_PREFIX):
                seconds = self.adapters.training_seconds(method[len(ADAPTER_PREFIX):])
                if seconds is not None:
                    training_s[method] = seconds
        return breakeven.break_even_lines(metrics, training_s)
