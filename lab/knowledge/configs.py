"""The knowledge methods' settings, apart from the code that runs them: RAG's chunking, CAG's room, Compare's
whole question, and the named evaluation sets.

    python -m lab ask --help       # every CompareConfig field as a flag, nested RagConfig/CagConfig ones included

These import no torch, transformers, langchain or FAISS, so the command line builds its flags and a tab
its form without loading a model library; lab.knowledge.rag, .cag, .compare and .evaluation use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lab.core.settings import BUNDLED_DOC, REPO_ROOT
from lab.inference.configs import GenerationSettings
from lab.knowledge.prompt import demonstrations

METHODS = ("base", "rag", "cag", "full")
"""The methods that need no adapter; `ft:<adapter>` adds a fine-tuned one."""

ADAPTER_PREFIX = "ft:"

CHUNKINGS = ("markdown", "recursive")

RETRIEVALS = ("dense", "hybrid")

MIN_CHUNK_SIZE = 100
"""Smallest chunk_size accepted, in characters: smaller chunks hold a few words each, which say little on their
own, and a short page already becomes hundreds of them to embed."""

_KNOWLEDGE = REPO_ROOT / "assets" / "knowledge"
EVAL_SETS = {
    "dev": (BUNDLED_DOC, _KNOWLEDGE / "qa_dev.jsonl"),
    "test": (BUNDLED_DOC, _KNOWLEDGE / "qa_test.jsonl"),
    "heldout": (_KNOWLEDGE / "kestrelford_transit_handbook.md", _KNOWLEDGE / "kestrelford_transit_qa.jsonl"),
    "heldout-notes": (_KNOWLEDGE / "hollowmere_apiary_notes.md", _KNOWLEDGE / "hollowmere_apiary_qa.jsonl"),
    "heldout-prose": (_KNOWLEDGE / "saltmarsh_lighthouse_story.txt", _KNOWLEDGE / "saltmarsh_lighthouse_qa.jsonl"),
}
"""Named (document, QA file) pairs. dev: lines of qa.jsonl whose 1-based number is not a multiple of 3, the
only questions prompts and answer reading may be tuned on (few-shot examples come from here too); test:
every third line, reported only. The held-out documents are never tuned on, each of another style, all invented
for the lab with answers that are spans of them: heldout, a transit handbook (tables, times, prices);
heldout-notes, course notes (numbered and emoji headings, bullet lists, formulas); heldout-prose, a story in plain
paragraphs with no heading at all."""


@dataclass(frozen=True)
class RagConfig:
    """How a document is chunked and how many chunks a question retrieves."""

    chunk_size: int = 500
    """Maximum chunk length in characters, at least 100 (MiniLM reads at most 256 word pieces, ~1000 chars). With
    markdown chunking, sections shorter than a fifth of it are merged with their neighbours, so smaller values give
    more focused chunks only down to that point; larger values give fewer, broader chunks."""
    chunk_overlap: int = 50
    """Characters shared by neighbouring chunks, so a fact cut at a boundary survives in one."""
    separators: tuple[str, ...] = ("\n\n", "\n", ". ", " ", "")
    """Split points tried in order (paragraph, line, sentence, word, character); a list is accepted."""
    top_k: int = 3
    """Number of chunks `retrieve` returns by default."""
    chunking: Literal["markdown", "recursive"] = "markdown"
    """markdown: cut at the document's headings first, then by size, each chunk keeping its heading path
    (suits structured notes; plain text has no headings and is cut by size only). recursive: cut the whole
    text by size, ignoring headings."""

    def __post_init__(self) -> None:
        # Lists are accepted for convenience but stored as a tuple so the config stays hashable.
        object.__setattr__(self, "separators", tuple(self.separators))
        for name in ("chunk_size", "chunk_overlap", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if self.chunk_size < MIN_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be >= {MIN_CHUNK_SIZE} characters, got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ValueError(
                f"chunk_overlap must be >= 0 and < chunk_size ({self.chunk_size}), "
                f"got {self.chunk_overlap}"
            )
        if not self.separators or not all(isinstance(s, str) for s in self.separators):
            raise ValueError(f"separators must be a non-empty list of strings, got {self.separators!r}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.chunking not in CHUNKINGS:
            raise ValueError(f"chunking must be one of {', '.join(CHUNKINGS)}, got {self.chunking!r}")


@dataclass(frozen=True)
class CagConfig:
    reserve_tokens: int = 256
    """Tokens that must stay free after the document for a question and its answer. A document whose
    prompt leaves fewer in the model's window is refused for CAG and full context (RAG still works)."""

    def __post_init__(self) -> None:
        if isinstance(self.reserve_tokens, bool) or not isinstance(self.reserve_tokens, int) or self.reserve_tokens < 1:
            raise ValueError(f"reserve_tokens must be a whole number >= 1, got {self.reserve_tokens!r}")


@dataclass(frozen=True)
class CompareConfig:
    max_new_tokens: int = 48
    """Most tokens any method may generate; short answers usually stop far earlier (see stop_at_answer)."""
    stop_at_answer: bool = True
    """Stop decoding once the first sentence or line of the answer is complete. The same rule applies to
    every method, so timings stay comparable; turn off to see everything the model would say."""
    rag: RagConfig = field(default_factory=RagConfig)
    """Chunking and top-k of the RAG method (the index is rebuilt only when chunking changes)."""
    cag: CagConfig = field(default_factory=CagConfig)
    """Room kept free beside the document for CAG and full context."""
    model_id: str | None = None
    """Model to ask ('embedded', a local folder or a Hub id); None = the lab's default (LAB_MODEL)."""
    load_in_4bit: bool | None = None
    """Load the model as 4-bit NF4; None = the lab's default (LAB_LOAD_IN_4BIT)."""
    few_shot: int = 0
    """Question -> short answer examples (from the bundled dev set) shown before every method's question, 0-8.
    They teach the answer format; CAG prefills them once with the document, full context pays for them on
    every question, RAG and base on every question too."""
    retrieval: Literal["dense", "hybrid"] = "dense"
    """How RAG finds its chunks. dense: by MiniLM cosine similarity to the question. hybrid: MiniLM's ranking
    fused with BM25 keyword ranking (reciprocal rank fusion), which also finds a chunk sharing a rare exact word
    with the question (a name, a number) that the small embedder ranks low. No index is rebuilt either way."""

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a whole number >= 1, got {self.max_new_tokens!r}")
        demonstrations(self.few_shot)  # validates the count
        if self.retrieval not in RETRIEVALS:
            raise ValueError(f"retrieval must be one of {', '.join(RETRIEVALS)}, got {self.retrieval!r}")

    @property
    def shots(self) -> tuple[tuple[str, str], ...]:
        return demonstrations(self.few_shot)

    @property
    def generation(self) -> GenerationSettings:
        """Greedy decoding: answers are reproducible and CAG can be checked against full context."""
        return GenerationSettings(max_new_tokens=self.max_new_tokens)
