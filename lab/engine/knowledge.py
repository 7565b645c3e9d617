"""The Engine's knowledge operations: documents, Compare's streamed answers, evaluations and their exports."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from lab.core import access
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA
from lab.core.users import check_name, workspace_dir
from lab.engine.training import Progress, TrainingOps
from lab.knowledge import compare, evaluation
from lab.knowledge.compare import CompareConfig, MethodUpdate
from lab.knowledge.documents import Document, load_document


class KnowledgeOps(TrainingOps):
    """Compare and evaluation over a document; `ft:<adapter>` methods come from the trained adapters."""
    METHODS = compare.METHODS
    """Knowledge methods that need no adapter; `ft:<adapter>` adds a fine-tuned one."""
    SCORES = evaluation.SCORES
    BUNDLED_QA = BUNDLED_QA

    def bundled_document(self) -> Document:
        return load_document(BUNDLED_DOC)

    load_document = staticmethod(load_document)

    def compare_methods(self) -> list[str]:
        """What Compare can run now: the plain methods and one `ft:<name>` per trained adapter."""
        return [*compare.METHODS, *(f"{compare.ADAPTER_PREFIX}{name}" for name in self.adapter_names())]

    def stream_compare(self, doc: Document, question: str, methods: str | Sequence[str], cfg: CompareConfig | None = None,
                caller: str | None = None) -> Iterator[MethodUpdate]:
        """Stream every method's answer to one question about `doc`, with its costs."""
        return compare.stream_compare(self, doc, question, methods, cfg, caller=caller)

    load_qa = staticmethod(evaluation.load_qa)

    def evaluate(self, doc: Document, items: Sequence[evaluation.QAItem], methods: str | Sequence[str],
                 cfg: CompareConfig | None = None, progress: Progress | None = None) -> dict:
        """Score a QA set through several methods (exact match, F1, ROUGE-L, BLEU, latency)."""
        return evaluation.evaluate(self, doc, items, methods, cfg, progress)

    def export_evaluation(self, result: dict, user: str, name: str) -> tuple[Path, Path]:
        """Write an evaluation as <name>.json and <name>.csv in `user`'s workspace, where it stays."""
        folder = workspace_dir(self.settings, user, "evaluations")
        stem = check_name(name, "Export name")
        access.check_workspace_quota(self.settings, user)  # already full: refused before anything is written
        written = (evaluation.write_json(result, folder / f"{stem}.json"),
                   evaluation.write_csv(result["rows"], folder / f"{stem}.csv"))
        self._keep_within_quota(user, written)
        return written

    # Anywhere the caller chooses (the command line's --out and --csv); a tab uses export_evaluation.
    write_evaluation_json = staticmethod(evaluation.write_json)
    write_evaluation_csv = staticmethod(evaluation.write_csv)
