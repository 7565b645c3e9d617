"""One user's RAG index build never holds up another user's lookup: a lock per document and settings, a
query embedded between a build's batches, and progress reported per batch.

    .venv/bin/python -m pytest tests/knowledge/test_index_locks.py -q

Builds are stand-ins that wait on an Event the test controls, so every assertion is about order and
state, never about time; `wait_until` only guards against a hang.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from lab.core.device import choose_device
from lab.core.settings import LabSettings
from lab.inference.runtime import Runtime
from lab.knowledge import compare
from lab.knowledge.compare import rag_index
from lab.knowledge.documents import document_from_text
from lab.knowledge.embedder import EMBED_BATCH, MiniLMEmbeddings, embed_chunks
from lab.knowledge.rag import RagConfig, build_or_load_index
from support import wait_until

CFG = RagConfig()


@pytest.fixture
def runtime(tmp_path) -> Runtime:
    """A runtime with no model loaded: these tests only build and look up indexes."""
    settings = LabSettings(data_dir=tmp_path / "data", model_id="unused", memory_budget_gb=1.0, load_in_4bit=False,
                           auth="")
    return Runtime(settings, device=choose_device(has_cuda=False, has_flash_attn=False))


class GatedBuilds:
    """Stands in for build_or_load_index: records each build, and the builds of documents named in `gated`
    wait until the test sets `release`."""

    def __init__(self, *gated: str) -> None:
        self.gated = set(gated)
        self.calls: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, doc, cfg, root, **_options):
        self.calls.append(doc.name)
        if doc.name in self.gated:
            self.started.set()
            assert self.release.wait(60), "the test never released the build"
        return SimpleNamespace(name=doc.name, n_chunks=1)


def in_thread(target) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(target=lambda: results.append(target()), daemon=True)
    thread.start()
    return thread, results


def test_a_held_index_is_returned_while_another_document_builds(runtime, monkeypatch):
    builds = GatedBuilds("bob.md")
    monkeypatch.setattr(compare, "build_or_load_index", builds)
    alice = document_from_text("alice.md", "# Guide\n\nAlice's document.\n")
    bob = document_from_text("bob.md", "# Notes\n\nBob's upload.\n")
    alice_index = rag_index(runtime, alice, CFG)  # built once, now held by the session manager

    bob_thread, _ = in_thread(lambda: rag_index(runtime, bob, CFG))
    wait_until(builds.started.is_set, "bob's build started")
    alice_thread, alice_results = in_thread(lambda: rag_index(runtime, alice, CFG))
    try:
        wait_until(lambda: alice_results, "alice's lookup returned while bob's build still runs", timeout_s=20)
        assert not builds.release.is_set()  # bob's build had not finished when alice got her index
        assert alice_results == [alice_index]
        assert builds.calls == ["alice.md", "bob.md"]
    finally:
        builds.release.set()
        bob_thread.join(60)
        alice_thread.join(60)


def test_two_first_questions_on_one_document_build_it_once(runtime, monkeypatch):
    builds = GatedBuilds("shared.md")
    monkeypatch.setattr(compare, "build_or_load_index", builds)
    doc = document_from_text("shared.md", "# Shared\n\nOne document, two users.\n")

    first, first_results = in_thread(lambda: rag_index(runtime, doc, CFG))
    wait_until(builds.started.is_set, "the first build started")
    second, second_results = in_thread(lambda: rag_index(runtime, doc, CFG))
    try:
        # The second user now waits on the document's own lock: one holder and one waiter.
        wait_until(lambda: list(compare._INDEX_LOCKS.in_use().values()) == [2], "the second lookup waits",
                   timeout_s=20)
    finally:
        builds.release.set()
        first.join(60)
        second.join(60)
    assert builds.calls == ["shared.md"]
    assert first_results[0] is second_results[0]
    assert compare._INDEX_LOCKS.in_use() == {}  # the key's lock went with its last user


def test_the_lock_table_does_not_grow_with_documents(runtime, monkeypatch):
    monkeypatch.setattr(compare, "build_or_load_index", GatedBuilds())
    for i in range(50):
        rag_index(runtime, document_from_text(f"doc{i}.md", f"document number {i}"), CFG)
    assert compare._INDEX_LOCKS.in_use() == {}


# ---- embedding in batches ------------------------------------------------------------------------

class GatedModel:
    """An encoder whose first call waits for `release`; records the texts of every call in order."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.first = threading.Event()
        self.release = threading.Event()

    def encode(self, texts, **_options) -> np.ndarray:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.first.set()
            assert self.release.wait(60), "the test never released the first batch"
        return np.full((len(texts), 4), 0.5, dtype=np.float32)


def test_a_question_is_embedded_between_the_batches_of_a_build():
    model = GatedModel()
    embedder = MiniLMEmbeddings(model, "gated")
    texts = [f"chunk {i}" for i in range(3 * EMBED_BATCH)]
    build, _ = in_thread(lambda: embed_chunks(embedder, texts))
    wait_until(model.first.is_set, "the build's first batch is encoding")
    query, query_results = in_thread(lambda: embedder.embed_query("what is it?"))
    try:
        wait_until(lambda: embedder.waiting_queries == 1, "the question waits for the batch in progress",
                   timeout_s=20)
    finally:
        model.release.set()
        build.join(60)
        query.join(60)
    batches = [texts[i:i + EMBED_BATCH] for i in range(0, len(texts), EMBED_BATCH)]
    # The question went in right after the batch it waited for, ahead of the build's remaining batches.
    assert model.calls == [batches[0], ["what is it?"], batches[1], batches[2]]
    assert len(query_results[0]) == 4


def test_embedding_reports_progress_per_batch(fake_embedder):
    seen: list[tuple[int, int]] = []
    texts = [f"chunk {i}" for i in range(2 * EMBED_BATCH + 5)]
    vectors = embed_chunks(fake_embedder, texts, progress=lambda done, total: seen.append((done, total)))
    assert len(vectors) == len(texts)
    assert seen == [(EMBED_BATCH, len(texts)), (2 * EMBED_BATCH, len(texts)), (len(texts), len(texts))]
    assert all(len(batch) <= EMBED_BATCH for batch in fake_embedder.model.calls)
    assert embed_chunks(fake_embedder, texts[:3]) == vectors[:3]  # no callback: the same vectors


def test_an_index_build_reports_progress_and_a_reload_does_not(fake_embedder, tmp_path):
    paragraphs = "\n\n".join(f"Paragraph {i} says something about topic number {i} of the report." for i in range(80))
    doc = document_from_text("report.md", f"# Report\n\n{paragraphs}\n")
    cfg = RagConfig(chunk_size=100, chunk_overlap=0)  # one paragraph per chunk
    seen: list[tuple[int, int]] = []
    index = build_or_load_index(doc, cfg, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert index.n_chunks > EMBED_BATCH  # more than one batch
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})  # strictly increasing
    assert seen[-1] == (index.n_chunks, index.n_chunks)
    assert {total for _, total in seen} == {index.n_chunks}
    seen.clear()
    assert build_or_load_index(doc, cfg, tmp_path, progress=lambda *a: seen.append(a)).reused
    assert seen == []


def test_a_build_shows_its_progress_as_a_note_before_the_answer(runtime, monkeypatch):
    """Compare's RAG card says how many chunks are embedded while the index builds (MethodUpdate.note)."""
    from lab.knowledge import compare

    release = threading.Event()

    def slow_build(doc, cfg, root, progress=None, **_options):
        progress(32, 1000)
        assert release.wait(60), "the test never released the build"
        return SimpleNamespace(name=doc.name, n_chunks=1)

    monkeypatch.setattr(compare, "build_or_load_index", slow_build)
    doc = document_from_text("notes.md", "# Notes\n\nsome text\n")
    updates = compare._index_with_progress(runtime, doc, CFG)
    first = next(updates)
    assert first.note == "building the RAG index of notes.md: 32 of 1,000 chunks embedded"
    release.set()
    with pytest.raises(StopIteration) as end:
        while True:
            next(updates)
    assert end.value.value.name == "notes.md"
