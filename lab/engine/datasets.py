"""Question/answer training sets built from a document by the model itself, edited, then kept as JSONL.

    python -m lab dataset build --doc assets/knowledge/llm_knowledge_guide.md --out qa.jsonl

The Train tab builds a set (schema-constrained decoding, validated and retried), lets the user edit the
rows and saves them into the user's uploads, within their quota.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab.core import access, names
from lab.core.users import uploads_dir
from lab.engine.jobs import Progress
from lab.engine.uploads import Uploads
from lab.inference.runtime import Runtime
from lab.knowledge.documents import Document

if TYPE_CHECKING:
    from lab.training.data import builder


class Datasets:
    """The Q&A dataset builder over the shared models, writing into users' uploads (lab.training.data.builder,
    which imports torch, is imported inside each method)."""

    def __init__(self, runtime: Runtime, uploads: Uploads) -> None:
        self.runtime, self.settings, self.uploads = runtime, runtime.settings, uploads

    def build_qa_dataset(self, doc: Document, cfg: builder.BuilderConfig,
                         progress: Progress | None = None) -> builder.BuildResult:
        """Question/answer pairs from a document, with schema-constrained decoding, validated and retried."""
        from lab.training.data import builder

        return builder.build_dataset(self.runtime, doc, cfg, progress)

    def save_qa_pairs(self, user: str, rows: Sequence[Sequence[str]], name: str) -> Path:
        """Save edited question/answer rows as <name>.jsonl (qa format) in `user`'s uploads."""
        from lab.training.data import builder

        pairs = [builder.QAPair(str(q).strip(), str(a).strip(), -1)
                 for q, a in rows if str(q).strip() and str(a).strip()]
        if not pairs:
            raise ValueError("The table has no question/answer rows to save; build or type some first.")
        folder = uploads_dir(self.settings, user)
        access.check_workspace_quota(self.settings, user)
        path = builder.write_jsonl(pairs, folder / names.file_name(f"{(name or 'qa').strip()}.jsonl"))
        self.uploads.keep_within_quota(user, [path])
        return path

    def write_qa_jsonl(self, pairs: list[builder.QAPair], path: str | Path) -> Path:
        """Write Q&A pairs as JSONL anywhere the caller chooses (the command line's --out)."""
        from lab.training.data import builder

        return builder.write_jsonl(pairs, path)
