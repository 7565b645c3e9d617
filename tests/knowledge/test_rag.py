"""Tests for lab.knowledge.rag: config validation, chunking, the on-disk index cache and retrieval.

    .venv/bin/python -m pytest tests/knowledge/test_rag.py -q

Tests that embed share MiniLM through `get_embedder()`'s module-level cache, so the model is
loaded once per test session (well under a second once torch is imported).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from lab.knowledge import rag
from lab.knowledge.documents import Document, document_from_text, readable
from lab.knowledge.embedder import get_embedder
from lab.knowledge.rag import RagConfig, build_or_load_index, index_key, retrieve, split_document

# Each paragraph is one fictional fact, so only its own chunk can answer a question about it
# (the model cannot know them from pre-training). Every fact is under 100 characters, so 110-char
# chunks hold one paragraph each (two never fit together) and retrieval has to pick the right one.
FACTS = [
    "The lighthouse on Vennick Island is painted emerald green and was first lit in 1871.",
    "Marta Oosterhuis bakes rye bread at the Kettle Lane bakery every Tuesday morning.",
    "The Quelm river freezes solid each January, and locals skate the nine kilometres to Dorn.",
    "Project Halyard's budget was cut to 40,000 euros after the second audit in March.",
    "The museum's oldest exhibit is a bronze astrolabe recovered from a shipwreck near Sallow Point.",
    "Server rack B7 in the basement data centre runs hot because its fan controller is faulty.",
    "Chess club meetings moved from the library to the town hall annex on Thursday evenings.",
]
SMALL_CFG = RagConfig(chunk_size=110, chunk_overlap=10, top_k=3)


@pytest.fixture(scope="module")
def facts_doc() -> Document:
    return document_from_text("facts.md", "# Town notes\n\n" + "\n\n".join(FACTS) + "\n")


def numbered_words(n: int) -> Document:
    return document_from_text("words.txt", " ".join(f"w{i:04d}" for i in range(n)))


def snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


# --- config ---------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = RagConfig()
    assert (cfg.chunk_size, cfg.chunk_overlap, cfg.top_k) == (500, 50, 3)
    assert cfg.separators == ("\n\n", "\n", ". ", " ", "")


def test_config_accepts_list_of_separators() -> None:
    cfg = RagConfig(separators=["\n\n", " "])
    assert cfg.separators == ("\n\n", " ")
    hash(cfg)  # stays usable as a dict key


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 99, "chunk_overlap": 0}, "chunk_size"),
        ({"chunk_size": -5}, "chunk_size"),
        ({"chunk_size": 12.5}, "chunk_size"),
        ({"chunk_overlap": -1}, "chunk_overlap"),
        ({"chunk_size": 100, "chunk_overlap": 100}, "chunk_overlap"),
        ({"chunk_size": 100, "chunk_overlap": 150}, "chunk_overlap"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"separators": []}, "separators"),
        ({"separators": ["\n", 3]}, "separators"),
    ],
)
def test_config_rejects_invalid_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RagConfig(**kwargs)


# --- splitting ------------------------------------------------------------------------------


def test_split_respects_chunk_size_and_overlap() -> None:
    cfg = RagConfig(chunk_size=100, chunk_overlap=20)
    chunks = split_document(numbered_words(300), cfg)
    assert len(chunks) > 10
    assert all(0 < len(c) <= cfg.chunk_size for c in chunks)
    for left, right in zip(chunks, chunks[1:]):
        left_words, right_words = left.split(), right.split()
        shared = [w for w in right_words if w in left_words]
        # The shared words are the tail of one chunk and the head of the next...
        assert shared, f"no overlap between {left!r} and {right!r}"
        assert shared == left_words[-len(shared) :] == right_words[: len(shared)]
        # ...and never longer than the configured overlap.
        assert len(" ".join(shared)) <= cfg.chunk_overlap
    # Nothing is lost: every word appears, in order.
    seen = []
    for chunk in chunks:
        seen.extend(w for w in chunk.split() if not seen or w > seen[-1])
    assert seen == numbered_words(300).text.split()


def test_split_without_overlap_shares_nothing() -> None:
    chunks = split_document(numbered_words(300), RagConfig(chunk_size=100, chunk_overlap=0))
    words = [w for c in chunks for w in c.split()]
    assert words == numbered_words(300).text.split()


def test_split_keeps_sentence_ends_with_their_sentence() -> None:
    text = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(12))
    chunks = split_document(document_from_text("s.txt", text), RagConfig(chunk_size=120, chunk_overlap=0))
    assert len(chunks) > 1
    assert all(c.endswith(".") and c.startswith("Sentence") for c in chunks)


def test_split_prefers_paragraph_boundaries(facts_doc: Document) -> None:
    chunks = split_document(facts_doc, SMALL_CFG)
    for fact in FACTS:
        assert any(fact in c for c in chunks), f"fact was cut across chunks: {fact}"


# --- index key ------------------------------------------------------------------------------


def test_index_key_tracks_what_changes_the_index(facts_doc: Document) -> None:
    base = index_key(facts_doc, SMALL_CFG, "emb-a")
    assert base == index_key(facts_doc, SMALL_CFG, "emb-a")
    assert len(base) == 16 and int(base, 16) >= 0
    other_doc = document_from_text("facts.md", facts_doc.text + "One more fact.")
    variants = [
        index_key(other_doc, SMALL_CFG, "emb-a"),
        index_key(facts_doc, RagConfig(chunk_size=111, chunk_overlap=10), "emb-a"),
        index_key(facts_doc, RagConfig(chunk_size=110, chunk_overlap=11), "emb-a"),
        index_key(facts_doc, RagConfig(chunk_size=110, chunk_overlap=10, separators=["\n", " "]), "emb-a"),
        index_key(facts_doc, SMALL_CFG, "emb-b"),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # top_k is a query-time setting: changing it must not force a rebuild.
    assert index_key(facts_doc, RagConfig(chunk_size=110, chunk_overlap=10, top_k=7), "emb-a") == base


# --- embedder -------------------------------------------------------------------------------


def test_embedder_is_cached_and_normalised() -> None:
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(get_embedder())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    embedder = get_embedder()
    assert all(r is embedder for r in results)
    vectors = np.array(embedder.embed_documents(["a short text", "another, rather longer, text"]))
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed_query("a short text"), vectors[0], atol=1e-5)


# --- index build / reuse --------------------------------------------------------------------


def test_index_built_once_then_reused(tmp_path: Path, facts_doc: Document) -> None:
    first = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    expected = tmp_path / facts_doc.sha256[:16] / "rag" / index_key(facts_doc, SMALL_CFG, get_embedder().name)
    assert first.path == expected
    assert not first.reused
    assert first.n_chunks == len(split_document(facts_doc, SMALL_CFG))
    assert first.build_s > 0
    assert {"index.faiss", "index.pkl", "meta.json"} <= set(snapshot(first.path))
    before = snapshot(first.path)

    second = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    assert second.reused
    assert second.path == first.path
    assert second.n_chunks == first.n_chunks
    assert snapshot(second.path) == before, "reusing the index rewrote its files"
    # Only the finished index folder exists: no temp folders left behind.
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]

    # A different chunking gets its own index beside the first one.
    third = build_or_load_index(facts_doc, RagConfig(chunk_size=300, chunk_overlap=30), tmp_path)
    assert not third.reused
    assert third.path.parent == first.path.parent and third.path != first.path


def test_crash_during_build_leaves_no_index(
    tmp_path: Path, facts_doc: Document, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = rag.FAISS.save_local

    def save_then_crash(self: rag.FAISS, folder_path: str, index_name: str = "index") -> None:
        real_save(self, folder_path, index_name)  # files are half there when the "crash" hits
        raise OSError("disk full")

    monkeypatch.setattr(rag.FAISS, "save_local", save_then_crash)
    with pytest.raises(OSError, match="disk full"):
        build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    rag_dir = tmp_path / facts_doc.sha256[:16] / "rag"
    assert list(rag_dir.iterdir()) == []

    monkeypatch.undo()
    index = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    assert not index.reused
    assert retrieve(index, "Who bakes rye bread?").chunks


def test_damaged_index_is_rebuilt(tmp_path: Path, facts_doc: Document) -> None:
    first = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    (first.path / "index.faiss").write_bytes(b"truncated")
    again = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    assert not again.reused
    assert again.n_chunks == first.n_chunks
    assert [p.name for p in again.path.parent.iterdir()] == [again.path.name]


# --- retrieval ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "answer_fact"),
    [
        ("What colour is the lighthouse on Vennick Island?", 0),
        ("Who bakes rye bread, and on which day?", 1),
        ("Why does rack B7 overheat?", 5),
    ],
)
def test_retrieve_finds_the_answering_chunk(
    tmp_path: Path, facts_doc: Document, question: str, answer_fact: int
) -> None:
    index = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    result = retrieve(index, question)
    assert result.question == question
    assert len(result.chunks) == SMALL_CFG.top_k
    assert FACTS[answer_fact] in result.chunks[0].text
    assert result.chunks[0].chunk_id == answer_fact  # chunk ids follow document order
    scores = [c.score for c in result.chunks]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    # A clear winner, not a near-tie among unrelated chunks.
    assert scores[0] > scores[1] + 0.1
    assert len({c.chunk_id for c in result.chunks}) == len(result.chunks)
    assert all(0 <= c.chunk_id < index.n_chunks for c in result.chunks)
    assert result.retrieval_ms > 0


def test_scores_are_cosine_similarity_and_survive_reload(tmp_path: Path, facts_doc: Document) -> None:
    built = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    reloaded = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    question = "How far do people skate on the frozen river?"
    a, b = retrieve(built, question, top_k=5), retrieve(reloaded, question, top_k=5)
    assert [c.chunk_id for c in a.chunks] == [c.chunk_id for c in b.chunks]
    np.testing.assert_allclose([c.score for c in a.chunks], [c.score for c in b.chunks], atol=1e-6)
    embedder = get_embedder()
    q = np.array(embedder.embed_query(question))
    top = a.chunks[0]
    # The vector is of what the model reads: the heading path and the chunk, as plain text.
    assert top.score == pytest.approx(float(q @ np.array(embedder.embed_query(readable(top.context)))), abs=1e-4)


def test_retrieve_top_k_is_capped_and_overridable(tmp_path: Path, facts_doc: Document) -> None:
    index = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    assert len(retrieve(index, "bread", top_k=1).chunks) == 1
    assert len(retrieve(index, "bread", top_k=1000).chunks) == index.n_chunks
    with pytest.raises(ValueError, match="top_k"):
        retrieve(index, "bread", top_k=0)


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_empty_question_is_rejected(tmp_path: Path, facts_doc: Document, question: str) -> None:
    index = build_or_load_index(facts_doc, SMALL_CFG, tmp_path)
    with pytest.raises(ValueError, match="question is empty"):
        retrieve(index, question)
