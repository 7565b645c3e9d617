"""Fixtures of the knowledge tests: a stand-in embedder for tests about building and locking, not about
what the vectors mean (those use the real MiniLM through get_embedder, as tests/knowledge/test_rag.py does)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from lab.knowledge import rag
from lab.knowledge.embedder import MiniLMEmbeddings


class HashModel:
    """Answers SentenceTransformer.encode with a unit vector of 8 numbers seeded by each text: the same text
    always gets the same vector, and nothing heavy is loaded. Records every call's texts."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts, **_options) -> np.ndarray:
        self.calls.append(list(texts))
        vectors = np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def fake_embedder(monkeypatch) -> MiniLMEmbeddings:
    """The lab's embedder class over HashModel, the one RAG index builds get for the test's duration."""
    embedder = MiniLMEmbeddings(HashModel(), "hash-8 (test stand-in)")
    monkeypatch.setattr(rag, "get_embedder", lambda: embedder)
    return embedder
