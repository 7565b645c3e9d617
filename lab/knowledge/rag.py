"""Retrieval-augmented generation's retrieval half: chunk a document, embed it with MiniLM, keep a
FAISS index on disk, and fetch the chunks closest to a question.

    .venv/bin/python -m lab ask --doc path/to/notes.md --question "What does the report conclude?" --methods rag --json

Indexes live under `<root>/<doc.sha256[:16]>/rag/<index_key>/`, so re-uploading the same text with
the same splitter settings reuses the saved index instead of embedding it again.

With `chunking="markdown"` (the default) the document is first cut at its own headings
(MarkdownHeaderTextSplitter), then each section by size; every chunk keeps its heading path
("Fares and Tickets > Ticket Types"), which is embedded with it, shown to the model in front of it and
reported as the answer's citation. Sections shorter than a fifth of chunk_size are merged with their
neighbours first, so a file of thousands of one-line headings does not become thousands of chunks.
`chunking="recursive"` cuts the whole text by size only. Either way a document may make at most LAB_MAX_CHUNKS
chunks, and building its index embeds them a batch at a time (lab.knowledge.embedder), reporting progress.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from lab.core.access import QuotaError
from lab.knowledge.disk import enforce_cap
from lab.knowledge.configs import RagConfig
from lab.knowledge.embedder import MiniLMEmbeddings, embed_chunks, get_embedder
from lab.knowledge.documents import Document, readable

with warnings.catch_warnings():
    # langchain-community warns on import that it is being sunset; the lab pins a version that
    # works, and the warning would otherwise show up in every test run and app log.
    warnings.filterwarnings("ignore", message=".*langchain-community.*", category=DeprecationWarning)
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy

log = logging.getLogger(__name__)

DEFAULT_ROOT = Path("data") / "knowledge"
"""Where the command line keeps per-document folders (data/ is git-ignored; the app passes its own root)."""

INDEX_FORMAT = 3
"""Bump when the on-disk layout or chunk metadata changes, so old indexes are not reused.
2: chunks carry a heading path, and the vectors embed the readable heading path + text.
3: short markdown sections are merged (MIN_SECTION_SHARE)."""

_HEADINGS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]
"""Heading levels that start a new section; deeper ones stay inside their section's text."""

MIN_SECTION_SHARE = 5
"""A markdown section shorter than chunk_size // MIN_SECTION_SHARE characters (100 at the default chunk_size) is
merged with the sections after it until the group reaches that length, unless the next section would not fit in
the same chunk (a short last group joins the one before). Every group then either holds a fifth of a chunk or
stands before a section of more than four fifths, so the number of chunks follows the length of the text, not
the number of headings."""

_KEEP_SEPARATOR = "end"
"""Separators stay at the end of the chunk they close: a sentence keeps its '. ' instead of the
next chunk starting with '. '. Part of the index key because it changes the chunks."""


@dataclass(frozen=True)
class Chunk:
    """One piece of the document, as indexed."""

    text: str
    """The piece as written in the document (markup kept), for display."""
    heading: str
    """Heading path above it, outermost first ("Fares > Ticket Types"); "" before the first heading. A chunk of
    merged short sections has the path they share, and each section's own remaining path opens its lines."""

    @property
    def context(self) -> str:
        """What the model and the embedder read: the heading path, then the text."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def _size_splitter(cfg: RagConfig) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(
        chunk_size=cfg.chunk_size,
        chunk_overlap=cfg.chunk_overlap,
        separators=list(cfg.separators),
        keep_separator=_KEEP_SEPARATOR,
    )


Section = tuple[tuple[str, ...], str]
"""(heading path as its headings, outermost first; the section's text)."""


def _sections(text: str) -> list[Section]:
    """The document cut at markdown headings, in document order."""
    splitter = MarkdownHeaderTextSplitter(_HEADINGS, strip_headers=True)
    sections = []
    for part in splitter.split_text(text):
        path = tuple(readable(part.metadata[name]) for _, name in _HEADINGS if part.metadata.get(name))
        # The splitter joins a section's paragraphs with "  \n"; turning that back into a blank line lets
        # the size splitter prefer paragraph boundaries again.
        sections.append((path, part.page_content.replace("  \n", "\n\n")))
    return sections


def _joined(group: list[Section]) -> tuple[str, str]:
    """(heading, text) of sections read as one: the path they all share as the heading, and each section's text
    after the rest of its own path, so no heading is lost."""
    shared = os.path.commonprefix([path for path, _ in group])  # on tuples: the longest common leading headings
    parts = []
    for path, text in group:
        rest = " > ".join(path[len(shared):])
        parts.append(f"{rest}\n{text}" if rest else text)
    return " > ".join(shared), "\n\n".join(parts)


def _merge_short(sections: list[Section], chunk_size: int) -> list[tuple[str, str]]:
    """Group neighbouring sections while a group is under chunk_size // MIN_SECTION_SHARE characters and the next
    section still fits beside it in one chunk (so a long section keeps its own heading path)."""
    least = chunk_size // MIN_SECTION_SHARE
    groups: list[list[Section]] = []
    sizes: list[int] = []
    for section in sections:
        if groups and sizes[-1] < least and sizes[-1] + len(section[1]) <= chunk_size:
            groups[-1].append(section)
            sizes[-1] += len(section[1])
        else:
            groups.append([section])
            sizes.append(len(section[1]))
    # A short last group reads better with the one before it than alone, when the two fit in one chunk.
    if len(groups) > 1 and sizes[-1] < least and sizes[-2] + sizes[-1] <= chunk_size:
        tail = groups.pop()
        groups[-1] += tail
    return [_joined(group) for group in groups]


def split_chunks(doc: Document, cfg: RagConfig) -> list[Chunk]:
    """Cut the document into chunks whose text is at most `cfg.chunk_size` characters (the heading path
    is extra)."""
    splitter = _size_splitter(cfg)
    if cfg.chunking == "markdown":
        sections = _merge_short(_sections(doc.text), cfg.chunk_size)
    else:
        sections = [("", doc.text)]
    return [Chunk(piece, heading) for heading, text in sections for piece in splitter.split_text(text) if piece.strip()]


def split_document(doc: Document, cfg: RagConfig) -> list[str]:
    """Each chunk as the model would read it: its heading path, then its text."""
    return [chunk.context for chunk in split_chunks(doc, cfg)]


def index_key(doc: Document, cfg: RagConfig, embedder_name: str) -> str:
    """Short hash naming one index: anything that changes the chunks or their vectors changes it.

    `top_k` is left out on purpose: it only matters at query time.
    """
    settings = {
        "format": INDEX_FORMAT,
        "doc_sha256": doc.sha256,
        "chunk_size": cfg.chunk_size,
        "chunk_overlap": cfg.chunk_overlap,
        "separators": list(cfg.separators),
        "keep_separator": _KEEP_SEPARATOR,
        "chunking": cfg.chunking,
        # The splitter's merge rules have changed between releases; a new one may chunk differently.
        "splitter": importlib.metadata.version("langchain-text-splitters"),
        "embedder": embedder_name,
    }
    blob = json.dumps(settings, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class RagIndex:
    """A FAISS index over one document's chunks, and where it lives on disk."""

    store: FAISS
    """The LangChain FAISS store (inner product over unit vectors, i.e. cosine similarity)."""
    key: str
    """`index_key` of the document, config and embedder."""
    path: Path
    """Folder holding `index.faiss`, `index.pkl` and `meta.json`."""
    n_chunks: int
    """Number of chunks in the index."""
    reused: bool
    """True when the index was loaded from disk instead of being built."""
    build_s: float
    """Seconds this call took: chunking + embedding + saving when built, loading when reused."""
    cfg: RagConfig
    """The config the index was built with; `retrieve` takes its default `top_k` from it."""


@dataclass(frozen=True)
class RetrievedChunk:
    """One retrieved chunk."""

    text: str
    """The chunk's text."""
    score: float
    """Cosine similarity to the question, -1..1, higher is closer."""
    chunk_id: int
    """Position of the chunk in the document (0-based), for showing where it came from."""
    heading: str = ""
    """The chunk's heading path in the document ("" when it has none): the citation a UI shows."""

    @property
    def context(self) -> str:
        """What the model read of this chunk: the heading path, then the text."""
        return Chunk(self.text, self.heading).context


@dataclass(frozen=True)
class Retrieval:
    """The chunks retrieved for one question, best first."""

    question: str
    """The question as asked."""
    chunks: list[RetrievedChunk]
    """Retrieved chunks sorted by descending score."""
    retrieval_ms: float
    """Milliseconds to embed the question and search the index."""


def _load(path: Path, embedder: MiniLMEmbeddings) -> FAISS:
    # The pickle is one this module wrote under the lab's own data folder, never an upload, so
    # LangChain's opt-in for unpickling is safe here. load_local does not persist the distance
    # strategy, so it is passed again to keep scores meaning "higher is closer".
    return FAISS.load_local(
        str(path),
        embedder,
        allow_dangerous_deserialization=True,
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
    )


def _build(doc: Document, cfg: RagConfig, embedder: MiniLMEmbeddings, path: Path, key: str, max_chunks: int | None,
           progress: Callable[[int, int], None] | None) -> int:
    chunks = split_chunks(doc, cfg)
    if not chunks:
        raise ValueError(f"document {doc.name!r} produced no chunks; it has no indexable text")
    if max_chunks is not None and len(chunks) > max_chunks:
        raise QuotaError(f"Document {doc.name!r} would make {len(chunks):,} RAG chunks at chunk_size {cfg.chunk_size}, "
                         f"more than one document may (the limit is LAB_MAX_CHUNKS={max_chunks}). Use a larger "
                         "chunk_size or a shorter document, or ask whoever runs the lab to raise LAB_MAX_CHUNKS.")
    # The vector is of what the model will read (heading path + plain text), the stored text is the original.
    vectors = embed_chunks(embedder, [readable(chunk.context) for chunk in chunks], progress)
    store = FAISS.from_embeddings(
        [(chunk.text, vector) for chunk, vector in zip(chunks, vectors)],
        embedder,
        metadatas=[{"chunk_id": i, "heading": chunk.heading} for i, chunk in enumerate(chunks)],
        ids=[str(i) for i in range(len(chunks))],
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
    )
    meta = {
        "key": key,
        "format": INDEX_FORMAT,
        "document": doc.name,
        "doc_sha256": doc.sha256,
        "config": asdict(cfg),
        "embedder": embedder.name,
        "n_chunks": len(chunks),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # Build in a hidden sibling folder and rename it into place: rename is atomic on one
    # filesystem, so a crash mid-build leaves only a temp folder that is never loaded.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        store.save_local(str(tmp))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        try:
            os.rename(tmp, path)
        except OSError:
            # Another thread or process finished the same index first; theirs is equivalent.
            if not (path / "meta.json").exists():
                raise
            log.info("index %s was built concurrently; keeping the existing one", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(chunks)


def _loaded(path: Path, embedder, key: str, cfg: RagConfig, started: float, reused: bool) -> RagIndex:
    """The index as read back from `path`, with the time since `started` as its build (or load) time."""
    store = _load(path, embedder)
    return RagIndex(store=store, key=key, path=path, n_chunks=int(store.index.ntotal), reused=reused,
                    build_s=time.perf_counter() - started, cfg=cfg)


def build_or_load_index(doc: Document, cfg: RagConfig, root: Path, max_chunks: int | None = None,
                        progress: Callable[[int, int], None] | None = None) -> RagIndex:
    """Load the document's index from `root` if it was built before, otherwise build and save it.

    A build refuses a document of more than `max_chunks` chunks (None: no limit; the app passes LAB_MAX_CHUNKS)
    before embedding anything, and calls `progress(done, total)` after each batch of chunks it embeds. An index
    already on disk is loaded whatever its size: the limit bounds the work of building one.
    """
    embedder = get_embedder()
    key = index_key(doc, cfg, embedder.name)
    path = Path(root) / doc.sha256[:16] / "rag" / key
    started = time.perf_counter()
    if path.is_dir():
        try:
            return _loaded(path, embedder, key, cfg, started, reused=True)
        except Exception as err:  # noqa: BLE001 - any unreadable index is rebuilt, not fatal
            # Only complete folders are renamed into place, so this means outside damage (a
            # truncated copy, a manual edit); rebuilding is cheaper than asking the user.
            log.warning("index at %s is unreadable (%s); rebuilding it", path, err)
            broken = path.parent / f".{path.name}.broken-{uuid.uuid4().hex[:8]}"
            os.rename(path, broken)
            shutil.rmtree(broken, ignore_errors=True)
            started = time.perf_counter()
    _build(doc, cfg, embedder, path, key, max_chunks, progress)
    enforce_cap(root, keep=path)  # the least recently used caches go past LAB_KNOWLEDGE_CACHE_GB
    # Load what is on disk rather than keeping the in-memory store, so a fresh build and a reuse
    # behave identically (and a concurrent winner's index is the one used).
    return _loaded(path, embedder, key, cfg, started, reused=False)


def retrieve(index: RagIndex, question: str, top_k: int | None = None) -> Retrieval:
    """Return the `top_k` chunks most similar to `question` (default: the index config's top_k)."""
    if not question or not question.strip():
        raise ValueError("question is empty; type a question before retrieving")
    k = index.cfg.top_k if top_k is None else top_k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    k = min(k, index.n_chunks)
    started = time.perf_counter()
    hits = index.store.similarity_search_with_score(question, k=k)
    elapsed_ms = (time.perf_counter() - started) * 1000
    chunks = [
        RetrievedChunk(
            text=doc.page_content,
            # float32 dot products of unit vectors can overshoot 1 by a rounding error.
            score=max(-1.0, min(1.0, float(score))),
            chunk_id=int(doc.metadata["chunk_id"]),
            heading=doc.metadata.get("heading", ""),
        )
        for doc, score in hits
    ]
    chunks.sort(key=lambda c: c.score, reverse=True)
    return Retrieval(question=question, chunks=chunks, retrieval_ms=elapsed_ms)


def knowledge_text(chunks: list[RetrievedChunk]) -> str:
    """The retrieved chunks as RAG's knowledge block, best first, each under its heading path."""
    return "\n\n".join(chunk.context.strip() for chunk in chunks)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", readable(text).lower()))


def cite(answer: str, chunks: list[RetrievedChunk]) -> RetrievedChunk | None:
    """The retrieved chunk that best supports `answer`: the one holding most of its words, the better
    retrieved one on a tie (so with no overlap at all, the top chunk the answer was read from)."""
    if not chunks:
        return None
    wanted = _words(answer)
    return max(chunks, key=lambda c: (len(wanted & _words(c.context)), c.score))
