"""RAG chunks follow the document's headings and carry their heading path; short sections merge and a document's
chunks are bounded in size and number; a RAG answer cites the chunk that supports it; few-shot examples keep CAG
and full context token-identical.

    .venv/bin/python -m pytest tests/knowledge/test_chunking.py -q
"""

from __future__ import annotations

import pytest

from lab.core.access import QuotaError
from lab.core.device import choose_device
from lab.core.settings import LabSettings
from lab.inference.runtime import Runtime
from lab.knowledge.cag import CagConfig
from lab.knowledge.compare import CompareConfig, ask, rag_index
from lab.knowledge.documents import document_from_text
from lab.knowledge.prompt import demonstrations, prompt_texts, split_prompt
from lab.knowledge.rag import (
    RagConfig,
    RetrievedChunk,
    build_or_load_index,
    cite,
    index_key,
    knowledge_text,
    split_chunks,
)

NOTES = """# Field Notes

Intro line: these notes record what the survey team saw around the north pond in the spring of 2024.

## Birds

Herons nest by the **north pond**, in the reeds on its western bank, and come back every March to breed.

### Owls

Owls hunt at dusk along the hedge between the pond and the barley field: barn owls and one tawny owl.

## Weather

| Month | Rain |
| --- | --- |
| May | 40 mm |
| June | 55 mm |
| July | 31 mm |
| August | 12 mm |
| September | 64 mm |
"""
"""Every section is at least a fifth of the default chunk_size (100 characters), so each is a chunk of its own."""

SHORT_NOTES = """# Field Notes

Intro line.

## Birds

Herons nest by the **north pond**.

### Owls

Owls hunt at dusk.

## Weather

| Month | Rain |
| --- | --- |
| May | 40 mm |
"""
"""The same headings over sections far shorter than a fifth of the default chunk_size."""


def test_markdown_chunks_keep_their_heading_path_and_original_text():
    chunks = split_chunks(document_from_text("notes.md", NOTES), RagConfig())
    assert [(c.heading, c.text) for c in chunks] == [
        ("Field Notes", "Intro line: these notes record what the survey team saw around the north pond in the "
                        "spring of 2024."),
        ("Field Notes > Birds", "Herons nest by the **north pond**, in the reeds on its western bank, and come back "
                                "every March to breed."),
        ("Field Notes > Birds > Owls", "Owls hunt at dusk along the hedge between the pond and the barley field: "
                                       "barn owls and one tawny owl."),
        ("Field Notes > Weather", "| Month | Rain |\n| --- | --- |\n| May | 40 mm |\n| June | 55 mm |\n"
                                  "| July | 31 mm |\n| August | 12 mm |\n| September | 64 mm |"),
    ]
    assert chunks[2].context.startswith("Field Notes > Birds > Owls\nOwls hunt at dusk")


def test_short_sections_merge_under_their_shared_heading_path():
    chunks = split_chunks(document_from_text("notes.md", SHORT_NOTES), RagConfig())
    # One chunk under the path the four sections share; each keeps the rest of its own path as a line.
    assert [(c.heading, c.text) for c in chunks] == [
        ("Field Notes", "Intro line.\n\nBirds\nHerons nest by the **north pond**.\n\nBirds > Owls\nOwls hunt at dusk."
                        "\n\nWeather\n| Month | Rain |\n| --- | --- |\n| May | 40 mm |"),
    ]
    # A short last section joins the one before it rather than standing alone.
    long = "The harbour master logs every ship that enters, with its name, flag, cargo and the hour it docked."
    chunks = split_chunks(document_from_text("log.md", f"# Harbour\n\n{long}\n\n## Fees\n\nFree.\n"), RagConfig())
    assert [(c.heading, c.text) for c in chunks] == [("Harbour", f"{long}\n\nFees\nFree.")]


def test_thousands_of_one_line_headings_make_a_bounded_number_of_chunks():
    body = "".join(f"## Item {i}\n\nValue {i}.\n\n" for i in range(5000))
    cfg = RagConfig()
    chunks = split_chunks(document_from_text("inventory.md", f"# Inventory\n\n{body}"), cfg)
    # Sections merge until they hold a fifth of chunk_size: 5,000 sections of about 11 characters make a few hundred.
    assert len(chunks) < 5000 // 5
    assert all(c.heading == "Inventory" and len(c.text) <= cfg.chunk_size for c in chunks)
    text = "\n\n".join(c.text for c in chunks)
    assert all(f"Item {i}\nValue {i}." in text for i in range(5000))  # nothing lost, each value under its item


def test_chunk_size_has_a_lower_bound():
    with pytest.raises(ValueError, match=r"chunk_size must be >= 100"):
        RagConfig(chunk_size=99, chunk_overlap=0)
    with pytest.raises(ValueError, match=r"chunk_size must be >= 100"):
        RagConfig(chunk_size=1, chunk_overlap=0)
    assert RagConfig(chunk_size=100, chunk_overlap=0).chunk_size == 100


def test_a_document_over_the_chunk_cap_is_refused_before_embedding(fake_embedder, tmp_path):
    doc = document_from_text("words.txt", " ".join(f"w{i:04d}" for i in range(2000)))  # 12,000 characters
    with pytest.raises(QuotaError, match="LAB_MAX_CHUNKS=10") as refused:
        build_or_load_index(doc, RagConfig(), tmp_path, max_chunks=10)
    assert "chunk_size" in str(refused.value)
    assert fake_embedder.model.calls == []  # refused before any embedding
    assert not list(tmp_path.rglob("index.faiss"))
    assert build_or_load_index(doc, RagConfig(), tmp_path, max_chunks=100).n_chunks > 10


def test_the_chunk_cap_comes_from_lab_max_chunks(fake_embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MAX_CHUNKS", "5")
    settings = LabSettings(data_dir=tmp_path / "data", model_id="unused", memory_budget_gb=1.0, auth="")
    assert settings.max_chunks == 5
    runtime = Runtime(settings, device=choose_device(has_cuda=False, has_flash_attn=False))
    doc = document_from_text("words.txt", " ".join(f"w{i:04d}" for i in range(2000)))
    with pytest.raises(QuotaError, match="the limit is LAB_MAX_CHUNKS=5"):
        rag_index(runtime, doc, RagConfig())
    monkeypatch.setenv("LAB_MAX_CHUNKS", "0")
    with pytest.raises(ValueError, match="LAB_MAX_CHUNKS"):
        LabSettings(data_dir=tmp_path / "data", model_id="unused", auth="")


def test_a_long_section_is_cut_by_size_under_the_same_heading():
    body = "\n\n".join(f"Sentence number {i} about the harbour tides." for i in range(40))
    cfg = RagConfig(chunk_size=120, chunk_overlap=0)
    chunks = split_chunks(document_from_text("long.md", f"# Intro\n\nhello\n\n## Tides\n\n{body}\n"), cfg)
    tides = [c for c in chunks if c.heading == "Intro > Tides"]
    assert len(tides) > 1 and all(len(c.text) <= cfg.chunk_size for c in tides)
    assert " ".join(c.text for c in tides).split() == body.split()


def test_recursive_chunking_ignores_headings():
    chunks = split_chunks(document_from_text("notes.md", NOTES), RagConfig(chunking="recursive"))
    assert {c.heading for c in chunks} == {""}
    assert chunks[0].text.startswith("# Field Notes")


def test_chunking_is_part_of_the_index_key_and_checked():
    doc = document_from_text("notes.md", NOTES)
    assert index_key(doc, RagConfig(), "e") != index_key(doc, RagConfig(chunking="recursive"), "e")
    with pytest.raises(ValueError, match="chunking"):
        RagConfig(chunking="sentences")


def chunk(i: int, text: str, score: float, heading: str = "") -> RetrievedChunk:
    return RetrievedChunk(text=text, score=score, chunk_id=i, heading=heading)


def test_the_citation_is_the_chunk_holding_the_answer():
    top = chunk(0, "Owls hunt at dusk.", 0.9, "Birds > Owls")
    holder = chunk(1, "Rain in May: 40 mm.", 0.5, "Weather")
    assert cite("40 mm", [top, holder]) is holder
    assert cite("**40 mm**", [top, holder]) is holder  # markup in the answer does not matter
    # No word of the answer anywhere, or no answer: the best retrieved chunk, which the model read first.
    assert cite("snow", [holder, top]) is top
    assert cite("", [holder, top]) is top
    assert cite("anything", []) is None


def test_rag_knowledge_gives_the_model_each_chunk_without_its_heading_path():
    # The path stays the citation; in the prompt SmolLM2-135M copied it as its answer ("LoRA > 1").
    text = knowledge_text([chunk(3, "Owls hunt at dusk.", 0.9, "Birds > Owls"), chunk(0, "Intro.", 0.2)])
    assert text == "Owls hunt at dusk.\n\nIntro."


def test_few_shot_turns_sit_in_the_prefix(tiny_engine):
    spec = tiny_engine.runtime.spec()
    with tiny_engine.sessions.use(spec) as loaded:
        tok = loaded.tokenizer
    shots = demonstrations(2)
    plain_prefix, plain_suffix = prompt_texts(tok, "what is it ?", "some text")
    prefix, suffix = prompt_texts(tok, "what is it ?", "some text", shots)
    assert suffix == plain_suffix  # only the cached half grows
    assert all(q in prefix and a in prefix for q, a in shots)
    parts = split_prompt(tok, "what is it ?", "some text", shots)
    assert parts.ids.shape[1] > split_prompt(tok, "what is it ?", "some text").ids.shape[1]


def test_cag_and_full_stay_token_identical_with_few_shot_and_rag_cites(tiny_engine):
    doc = document_from_text("tiny.md", "# Facts\n\nthe capital of france is paris .\n\n"
                                        "## River\n\nthe river is one two three .\n")
    cfg = CompareConfig(max_new_tokens=4, stop_at_answer=False, few_shot=2, cag=CagConfig(reserve_tokens=32),
                        rag=RagConfig(chunk_size=100, chunk_overlap=10, top_k=2))
    rows = {u.method: u for u in ask(tiny_engine.runtime, doc, "what is the river ?", "rag,cag,full", cfg)}
    assert all(u.error is None for u in rows.values()), {m: u.error for m, u in rows.items()}
    assert rows["cag"].text == rows["full"].text
    assert rows["cag"].metrics["context_tokens"] == rows["full"].metrics["context_tokens"]
    assert rows["rag"].citation in rows["rag"].chunks
    # CAG and full cite the same passage (same answer, same search), when they have an answer at all.
    assert rows["cag"].citation == rows["full"].citation
    assert (rows["cag"].citation is None) == (rows["cag"].answer == "")


def test_base_has_no_citation(tiny_engine):
    doc = document_from_text("tiny.md", "the capital of france is paris .")
    row = ask(tiny_engine.runtime, doc, "what is the capital ?", "base", CompareConfig(max_new_tokens=3, stop_at_answer=False))[0]
    assert row.citation is None
