"""CAG: the cache is reused from disk, cropped back after every question, refuses documents that do
not fit, and on the embedded model answers exactly like a full re-prefill of the same tokens.

    .venv/bin/python -m pytest tests/test_cag.py -q            # add -m "not slow" for the tiny-model half
"""

from __future__ import annotations

import json

import pytest
import torch

from lab.core.device import choose_device
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA, LabSettings
from lab.engine import Engine
from lab.inference.generate import GenerationSettings, generate_text
from lab.knowledge import cag
from lab.knowledge.cag import CagConfig, crop_to, get_cag, stream_answer
from lab.knowledge.compare import CompareConfig, ask
from lab.knowledge.documents import document_from_text, load_document
from lab.knowledge.evaluation import load_qa
from lab.knowledge.prompt import prompt_texts, split_prompt
from lab.knowledge.rag import RagConfig

SMALL = CagConfig(reserve_tokens=32)
SMALL_RAG = RagConfig(chunk_size=100, chunk_overlap=10, top_k=2)  # a few chunks fit the tiny model's 256 positions
TEXT = "the capital of france is paris . the river of the city is one two three . " * 3
QUESTIONS = ["what is the capital of france ?", "what is the river ?", "one two three ?"]


@pytest.fixture
def doc():
    return document_from_text("tiny.md", TEXT)


def engine_on(data_dir, model_dir, load_in_4bit=False) -> Engine:
    """A fresh engine (so a fresh session manager) over a given data dir."""
    settings = LabSettings(data_dir=data_dir, model_id=str(model_dir), memory_budget_gb=1.0,
                           load_in_4bit=load_in_4bit, auth="")
    return Engine(settings, device=choose_device(has_cuda=False, has_flash_attn=False))


def build(engine: Engine, doc, cfg=SMALL):
    spec = engine.runtime.spec()
    with engine.sessions.use(spec) as loaded:
        return get_cag(engine.sessions, spec, loaded, doc, engine.settings.subdir("knowledge"), cfg), loaded


def test_config_names_the_field():
    with pytest.raises(ValueError, match="reserve_tokens"):
        CagConfig(reserve_tokens=0)


def test_cache_is_saved_then_reused_from_disk_without_prefill(tiny_engine, tiny_model_dir, doc, monkeypatch):
    first, _ = build(tiny_engine, doc)
    assert not first.reused
    assert (first.path / "kv.safetensors").is_file()
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["kv_len"] == first.kv_len and meta["doc_sha256"] == doc.sha256
    assert first.path.parent.parent == tiny_engine.settings.data_dir / "knowledge" / doc.sha256[:16]

    def no_prefill(*args, **kwargs):
        raise AssertionError("the cache was prefilled again instead of loaded from disk")

    monkeypatch.setattr(cag, "prefill", no_prefill)
    again = engine_on(tiny_engine.settings.data_dir, tiny_model_dir)  # a new process, in effect
    second, _ = build(again, doc)
    assert second.reused and second.key == first.key and second.kv_len == first.kv_len
    assert torch.equal(second.prefix_ids, first.prefix_ids)
    for a, b in zip(first.cache.layers, second.cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_cache_is_held_by_the_session_manager_and_evictable(tiny_engine, doc):
    kv, _ = build(tiny_engine, doc)
    entry = next(e for e in tiny_engine.devices.stats()["entries"] if e["key"] == kv.entry_key)
    assert entry["kind"] == "kv_cache"
    assert build(tiny_engine, doc)[0] is kv  # held: the same object, nothing reloaded
    tiny_engine.models.unload(tiny_engine.runtime.spec().key)  # evicting the model drops its caches too
    assert tiny_engine.sessions.get(kv.entry_key) is None
    assert build(tiny_engine, doc)[0].reused  # and the next use reloads from disk


def test_crop_returns_to_knowledge_length_even_when_stopped_early(tiny_engine, doc):
    kv, loaded = build(tiny_engine, doc)
    settings = GenerationSettings(max_new_tokens=6)
    for question in QUESTIONS:
        ids = split_prompt(loaded.tokenizer, question, doc.text).suffix_ids
        events = list(stream_answer(kv, loaded, ids, settings))
        assert events[-1].done
        assert kv.cache.get_seq_length() == kv.kv_len
        assert kv.last_crop_ms < 50  # a slice per layer; the benchmark reports the real number
    stream = stream_answer(kv, loaded, ids, settings)
    next(stream)
    assert kv.cache.get_seq_length() > kv.kv_len  # mid-answer the cache holds the question too
    stream.close()  # a UI that stops reading
    assert kv.cache.get_seq_length() == kv.kv_len
    assert crop_to(kv.cache, kv.kv_len) >= 0  # nothing left to crop


def test_cag_output_equals_full_reprefill_on_tiny_model(tiny_engine, doc):
    kv, loaded = build(tiny_engine, doc)
    settings = GenerationSettings(max_new_tokens=8)
    for question in QUESTIONS:
        parts = split_prompt(loaded.tokenizer, question, doc.text)
        assert torch.equal(parts.prefix_ids, kv.prefix_ids)
        full = generate_text(loaded.model, loaded.tokenizer, parts.ids, settings)
        cached = list(stream_answer(kv, loaded, parts.suffix_ids, settings))[-1]
        assert cached.text == full.text
        assert cached.timings.context_tokens == full.timings.context_tokens == parts.ids.shape[1]


def test_too_long_document_is_refused_with_token_counts_and_rag_still_answers(tiny_engine):
    long_doc = document_from_text("long.md", "the model is one two three . " * 60)  # ~360 tokens > 256
    with pytest.raises(ValueError, match=r"needs [\d,]+ tokens plus 32 .* window holds 256 tokens") as info:
        build(tiny_engine, long_doc)
    assert "RAG" in str(info.value)
    rows = {u.method: u for u in ask(tiny_engine.runtime, long_doc, "what is the model ?", "cag,full,rag",
                                     CompareConfig(max_new_tokens=4, cag=SMALL, rag=SMALL_RAG))}
    assert "too long" in rows["cag"].error and "too long" in rows["full"].error
    assert rows["rag"].error is None and rows["rag"].text and rows["rag"].chunks


def test_four_bit_model_gets_its_own_cache_and_matches_full(tiny_engine, tiny_model_dir, doc):
    full_precision, _ = build(tiny_engine, doc)
    engine = engine_on(tiny_engine.settings.data_dir, tiny_model_dir, load_in_4bit=True)
    kv, loaded = build(engine, doc)
    assert kv.key != full_precision.key and not kv.reused
    assert kv.cache.layers[0].keys.dtype == torch.float32  # the compute dtype, not 4-bit
    parts = split_prompt(loaded.tokenizer, QUESTIONS[0], doc.text)
    settings = GenerationSettings(max_new_tokens=6)
    full = generate_text(loaded.model, loaded.tokenizer, parts.ids, settings)
    assert list(stream_answer(kv, loaded, parts.suffix_ids, settings))[-1].text == full.text
    assert kv.cache.get_seq_length() == kv.kv_len


# ---- the embedded SmolLM2 and the bundled guide -------------------------------------------------

@pytest.fixture(scope="session")
def guide_cag(embedded_engine):
    """The bundled guide's CAG cache, built (or loaded from data/) once per test session."""
    doc = load_document(BUNDLED_DOC)
    return doc, *build(embedded_engine, doc, CagConfig())


@pytest.mark.slow
def test_prompt_split_tokenizes_like_the_whole_prompt(guide_cag):
    doc, _, loaded = guide_cag
    for item in load_qa(BUNDLED_QA, limit=20):
        for knowledge in (doc.text, None):
            prefix, suffix = prompt_texts(loaded.tokenizer, item.question, knowledge)
            whole = loaded.tokenizer(prefix + suffix, return_tensors="pt", add_special_tokens=False).input_ids
            assert torch.equal(whole, split_prompt(loaded.tokenizer, item.question, knowledge).ids)


@pytest.mark.slow
def test_greedy_cag_equals_full_reprefill_on_embedded_model(guide_cag):
    doc, kv, loaded = guide_cag
    assert 3000 < kv.kv_len < 8192 - 256
    settings = GenerationSettings(max_new_tokens=12)
    for item in load_qa(BUNDLED_QA, limit=5):
        parts = split_prompt(loaded.tokenizer, item.question, doc.text)
        full = generate_text(loaded.model, loaded.tokenizer, parts.ids, settings)
        cached = list(stream_answer(kv, loaded, parts.suffix_ids, settings))[-1]
        assert cached.text == full.text, item.question
        assert kv.cache.get_seq_length() == kv.kv_len


def test_bench_cag_reports_every_documented_key(tiny_engine, doc):
    from lab.bench.cag import bench_cag
    cfg = CompareConfig(cag=SMALL, rag=SMALL_RAG)
    result = bench_cag(tiny_engine.runtime, doc, QUESTIONS[:2], QUESTIONS, cfg, new_tokens=4)
    assert {"knowledge_tokens", "ttft_full_s", "ttft_cag_s", "ttft_ratio", "crop_ms", "greedy_equal",
            "rag_retrieval_p50_ms", "rag_retrieval_p95_ms"} <= set(result)
    assert result["greedy_equal"] is True and result["knowledge_tokens"] > 0
    assert 0 < result["rag_retrieval_p50_ms"] <= result["rag_retrieval_p95_ms"]
