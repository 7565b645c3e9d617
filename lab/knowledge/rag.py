"""Retrieval-augmented generation's retrieval half: chunk a document, embed it with MiniLM, keep a
FAISS index on disk, and fetch the chunks closest to a question.

    .venv/bin/python -m lab ask --doc path/to/notes.md --question "What does the report conclude?" --methods rag --json

Indexes live under `<root>/<doc.sha256[:16]>/rag/<index_key>/`, so re-uploading the same text with
the same splitter settings reuses the saved index instead of embedding it again.

With `chunking="markdown"` (the default) the document is first cut at its own headings
(MarkdownHeaderTextSplitter), then each section by size; every chunk keeps its heading path
("Fares and Tickets > Ticket Types"), which is embedded with it and reported as the answer's citation but not
shown to the model (HEADINGS_SHOWN: a small model copies it as its answer). retrieve(mode="hybrid") fuses the
MiniLM ranking with BM25's by reciprocal rank fusion. Sections shorter than a fifth of chunk_size are merged
with their neighbours first, so a file of thousands of one-line headings does not become thousands of chunks.
`chunking="recursive"` cuts the whole text by size only. Either way a document may make at most LAB_MAX_CHUNKS
chunks, and building its index embeds them a batch at a time (lab.knowledge.embedder), reporting progress.
"""

from __future__ import annotations

import dataclasses
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from lab.core.access import QuotaError
from lab.core.files import publish_dir
from lab.knowledge.configs import RETRIEVALS, RagConfig
from lab.knowledge.disk import enforce_cap
from lab.knowledge.documents import Document, readable
from lab.knowledge.embedder import MiniLMEmbeddings, embed_chunks, get_embedder
from lab.knowledge.metrics import normalise

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
    bm25: Any = None
    """Hybrid retrieval's BM25Retriever over the same chunks, built on the first hybrid question."""
    bm25_chunks: dict = field(default_factory=dict)
    """chunk_id -> the stored chunk, for hybrid hits."""


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
    fused: float | None = None
    """Hybrid retrieval only: the reciprocal-rank-fusion score that ordered it (dense and BM25 ranks); None when
    retrieval was dense only."""

    @property
    def context(self) -> str:
        """What the embedder read of this chunk: the heading path, then the text."""
        return Chunk(self.text, self.heading).context

    @property
    def shown(self) -> str:
        """What the model reads of this chunk in RAG's prompt (see HEADINGS_SHOWN)."""
        return _shown(self.text, self.heading, HEADINGS_SHOWN)


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
    # A crash mid-build leaves only a hidden folder that is never loaded; an index another thread or process
    # finished first from the same inputs is kept.
    with publish_dir(path) as tmp:
        store.save_local(str(tmp))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
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
        except Exception as err:  # any unreadable index is rebuilt, not fatal
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


RRF_K = 60
"""Reciprocal rank fusion's constant: a chunk ranked r by one retriever adds 1 / (RRF_K + r). 60 is the value of
Cormack et al. (2009); it keeps one retriever's first place from outweighing agreement lower down."""

HYBRID_POOL = 20
"""Chunks each retriever ranks for fusion (at least top_k): a chunk outside both lists scores nothing anyway."""


def _hit(doc, score: float) -> RetrievedChunk:
    # float32 dot products of unit vectors can overshoot 1 by a rounding error.
    return RetrievedChunk(text=doc.page_content, score=max(-1.0, min(1.0, float(score))),
                          chunk_id=int(doc.metadata["chunk_id"]), heading=doc.metadata.get("heading", ""))


def _words_of(text: str) -> list[str]:
    return re.findall(r"\w+", readable(text).lower())


def _bm25(index: RagIndex, pool: int):
    """The index's BM25 retriever over the same chunk texts the vectors were made from (heading path + text),
    built on first use and kept on the index: a few milliseconds per thousand chunks."""
    if index.bm25 is None or index.bm25.k != pool:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*langchain-community.*", category=DeprecationWarning)
            from langchain_community.retrievers import BM25Retriever
        docs = sorted(index.store.docstore._dict.values(), key=lambda d: int(d.metadata["chunk_id"]))
        texts = [Chunk(d.page_content, d.metadata.get("heading", "")).context for d in docs]
        # The chunk map first: another thread that sees the new retriever finds its chunks already there.
        index.bm25_chunks = {int(d.metadata["chunk_id"]): d for d in docs}
        index.bm25 = BM25Retriever.from_texts(texts, metadatas=[d.metadata for d in docs], k=pool,
                                              preprocess_func=_words_of)
    return index.bm25


def _hybrid(index: RagIndex, question: str, k: int) -> list[RetrievedChunk]:
    """The top k by reciprocal rank fusion of MiniLM's ranking and BM25's, each over its best HYBRID_POOL chunks.
    Dense finds paraphrases; BM25 finds the rare exact word (a line name, a number, a code) a small embedder blurs."""
    pool = min(index.n_chunks, max(HYBRID_POOL, k))
    qvec = index.store.embedding_function.embed_query(question)
    dense = index.store.similarity_search_with_score_by_vector(qvec, k=pool)
    cosine = {int(doc.metadata["chunk_id"]): score for doc, score in dense}
    fused: dict[int, float] = {}
    for rank, (doc, _) in enumerate(dense, start=1):
        fused[int(doc.metadata["chunk_id"])] = 1 / (RRF_K + rank)
    # BM25's own scores rather than its retriever's top list: a chunk sharing no word with the question scores 0
    # and must not be ranked at all (the list would fill up with such chunks in arbitrary order).
    bm25 = _bm25(index, pool)
    scores = bm25.vectorizer.get_scores(bm25.preprocess_func(question))
    matched = sorted((key for key in range(len(scores)) if scores[key] > 0), key=lambda key: -scores[key])[:pool]
    for rank, position in enumerate(matched, start=1):
        key = int(bm25.docs[position].metadata["chunk_id"])
        fused[key] = fused.get(key, 0.0) + 1 / (RRF_K + rank)
    best = sorted(fused, key=lambda key: (-fused[key], key))[:k]
    chunks = []
    for key in best:
        if key not in cosine:  # found by BM25 alone: its cosine from the stored vector, for display
            vector = index.store.index.reconstruct(key)
            cosine[key] = float(sum(a * b for a, b in zip(vector, qvec, strict=True)))
        doc = index.bm25_chunks[key]
        chunks.append(dataclasses.replace(_hit(doc, cosine[key]), fused=round(fused[key], 6)))
    return chunks


def retrieve(index: RagIndex, question: str, top_k: int | None = None, mode: str = "dense") -> Retrieval:
    """Return the `top_k` chunks closest to `question` (default: the index config's top_k), best first.

    mode dense: by MiniLM cosine similarity. hybrid: by reciprocal rank fusion of that ranking and BM25's (see
    _hybrid); each chunk's `score` is still its cosine, `fused` the score that ordered it."""
    if not question or not question.strip():
        raise ValueError("question is empty; type a question before retrieving")
    if mode not in RETRIEVALS:
        raise ValueError(f"retrieval must be one of {', '.join(RETRIEVALS)}, got {mode!r}")
    k = index.cfg.top_k if top_k is None else top_k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    k = min(k, index.n_chunks)
    started = time.perf_counter()
    if mode == "hybrid":
        chunks = _hybrid(index, question, k)
    else:
        chunks = [_hit(doc, score) for doc, score in index.store.similarity_search_with_score(question, k=k)]
        chunks.sort(key=lambda c: c.score, reverse=True)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Retrieval(question=question, chunks=chunks, retrieval_ms=elapsed_ms)


HEADINGS_SHOWN = "none"
"""How a retrieved chunk's heading path appears in RAG's prompt. none: not at all; it is still embedded with the
chunk and is the answer's citation. path: on the line above the text, as the embedder reads it. after: below
the text, as "(section: path)". With path, SmolLM2-135M answered with the path itself ("LoRA > 1") on notes-style
documents; on the dev set (20 questions, docs/BENCHMARKS.md) RAG F1 was none 0.27, path 0.22, after 0.20."""


def _shown(text: str, heading: str, style: str) -> str:
    if not heading or style == "none":
        return text.strip()
    if style == "after":
        return f"{text.strip()}\n(section: {heading})"
    return f"{heading}\n{text}".strip()


def knowledge_text(chunks: list[RetrievedChunk]) -> str:
    """The retrieved chunks as RAG's knowledge block, best first, each as `RetrievedChunk.shown`."""
    return "\n\n".join(chunk.shown for chunk in chunks)


def holds_answer(chunk: RetrievedChunk, normalised_answer: str) -> bool:
    """Whether the chunk, as the model read it, contains the answer: both normalised as the F1 metric does
    (lab.knowledge.metrics.normalise), compared as whole words."""
    return bool(normalised_answer) and f" {normalised_answer} " in f" {normalise(readable(chunk.shown))} "




def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", readable(text).lower()))


def cite(answer: str, chunks: list[RetrievedChunk]) -> RetrievedChunk | None:
    """The retrieved chunk that best supports `answer`: the one holding most of its words, the better
    retrieved one on a tie (so with no overlap at all, the top chunk the answer was read from)."""
    if not chunks:
        return None
    wanted = _words(answer)
    return max(chunks, key=lambda c: (len(wanted & _words(c.context)), c.score))
