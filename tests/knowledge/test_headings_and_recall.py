"""A heading path is never read as an answer; every evaluation says whether the answer was retrieved (recall@k,
hit rank); hybrid retrieval fuses BM25 with MiniLM; the held-out sets of three styles have span answers.

    .venv/bin/python -m pytest tests/knowledge/test_headings_and_recall.py -q                 # fast
    .venv/bin/python -m pytest tests/knowledge/test_headings_and_recall.py -q -m slow         # runs SmolLM2
"""

from __future__ import annotations

import pytest

from lab.knowledge.compare import ask
from lab.knowledge.configs import EVAL_SETS, CompareConfig
from lab.knowledge.documents import document_from_text, load_document, readable
from lab.knowledge.evaluation import hit_rank, load_qa, summarise
from lab.knowledge.metrics import normalise
from lab.knowledge.prompt import HeadingGuard, read_answer
from lab.knowledge.rag import RagConfig, RetrievedChunk, build_or_load_index, knowledge_text, retrieve

NOTES = """# Brightwater Robotics - Employee Leave Policy 2027

## 10. Parental leave

Parents get 20 weeks of paid leave.

## 📌 Summary

- leave is booked in the HR portal

## LoftQ

LoftQ initialises the adapter so that the quantized model and the adapter together match the original.

## Formulas

    x > 0 means the balance is positive
"""


@pytest.fixture(scope="module")
def guard() -> HeadingGuard:
    return HeadingGuard(NOTES)


@pytest.mark.parametrize("answer", [
    "Brightwater Robotics - Employee Leave Policy 2027 > 10",  # the answer: title > numbered heading
    "Brightwater Robotics - Employee Leave Policy 2027",        # the title alone
    "Brightwater Robotics - Employee Leave Policy 2027 > 10. Parental leave",
    "10. Parental leave > 📌",                                   # a path cut short
    "📌 Summary",                                                # a heading said nowhere else
    "10. Parental leave",
])
def test_heading_paths_title_and_bare_headings_are_rejected(guard, answer):
    assert guard(answer)


@pytest.mark.parametrize("answer", [
    "20 weeks",
    "LoftQ",      # a heading the body also says is a fair answer
    "x > 0",      # a formula is not a heading path
    "the HR portal",
    "",
])
def test_real_answers_are_kept(guard, answer):
    assert not guard(answer)


def test_a_rejected_line_falls_back_to_the_next_line_or_to_no_answer(guard):
    raw = "Brightwater Robotics - Employee Leave Policy 2027 > 10\n20 weeks of paid leave.\n"
    assert read_answer(raw, guard) == ("20 weeks of paid leave", True)
    assert read_answer("Brightwater Robotics - Employee Leave Policy 2027 > 10", guard) == ("", False)
    # Without a guard the rule is as before: the first line is read.
    assert read_answer(raw)[0] == "Brightwater Robotics - Employee Leave Policy 2027 > 10"


def test_a_document_without_headings_rejects_nothing():
    plain = HeadingGuard("Just prose. The river Lenn > the river Dorn in length.")
    assert not plain("Lenn > Dorn") and not plain("the river Lenn")


def chunk(i: int, text: str, heading: str = "") -> RetrievedChunk:
    return RetrievedChunk(text=text, score=0.5, chunk_id=i, heading=heading)


def test_hit_rank_uses_the_f1_normalisation():
    chunks = [chunk(0, "Parents get **20 weeks** of paid leave."), chunk(1, "The Fare is 3.20 crowns."),
              chunk(2, "the fare is 3.20 crowns")]
    assert normalise("The  Fare, is 3.20!") == "fare is 320"
    assert hit_rank(chunks, "20 weeks") == 1
    assert hit_rank(chunks, "the fare is 3.20 crowns") == 2  # first holder, markup and case ignored
    assert hit_rank(chunks, "200 weeks") is None              # whole words only: "20 weeks" is not "200 weeks"
    assert hit_rank(chunks, "40 weeks") is None


def test_recall_at_k_is_summarised_for_retrieving_methods_only():
    def row(method, retrieved, rank):
        return {"method": method, "error": None, "answer": "a", "reference": "a", "retrieved": retrieved,
                "hit_rank": rank, "latency_s": 1.0, "ttft_s": 0.5}
    rows = [row("rag", True, 1), row("rag", False, None), row("rag", True, 3), row("rag", True, 2),
            row("base", None, None)]
    summary = summarise(rows, ["rag", "base"])
    assert summary["rag"]["recall_at_k"] == 0.75 and summary["base"]["recall_at_k"] is None


def test_the_prompt_shows_no_heading_path_the_citation_keeps_it():
    top = chunk(3, "Owls hunt at dusk.", "Birds > Owls")
    text = knowledge_text([top, chunk(0, "Intro.")])
    assert "Owls hunt at dusk." in text and "Birds > Owls" not in text
    assert top.heading == "Birds > Owls"


FACTS = ["The ferry to Dunmore leaves from pier 7 at dawn.",
         "Code QX-4471 opens the east storeroom of the depot.",
         "Apple trees in the orchard flower in late April.",
         "The night bus N9 runs every forty minutes after midnight."]


def test_hybrid_retrieval_fuses_keywords_with_vectors(tmp_path, fake_embedder):
    # The stand-in embedder's vectors mean nothing, so whatever hybrid puts first it owes to BM25's exact words.
    doc = document_from_text("facts.md", "\n\n".join(FACTS))
    index = build_or_load_index(doc, RagConfig(chunk_size=100, chunk_overlap=0, top_k=2), tmp_path)
    found = retrieve(index, "which code opens storeroom QX-4471", mode="hybrid")
    assert "QX-4471" in found.chunks[0].text and len(found.chunks) == 2
    assert all(c.fused is not None and -1.0 <= c.score <= 1.0 for c in found.chunks)
    assert [c.fused for c in found.chunks] == sorted((c.fused for c in found.chunks), reverse=True)
    assert all(c.fused is None for c in retrieve(index, "which code", mode="dense").chunks)
    with pytest.raises(ValueError, match="retrieval"):
        retrieve(index, "which code", mode="sparse")
    with pytest.raises(ValueError, match="retrieval"):
        CompareConfig(retrieval="sparse")


@pytest.mark.parametrize("name", ["heldout", "heldout-notes", "heldout-prose"])
def test_heldout_sets_have_span_answers(name):
    doc_path, qa_path = EVAL_SETS[name]
    items = load_qa(qa_path)
    assert len(items) >= 20 and len({item.question for item in items}) == len(items)
    plain = readable(load_document(doc_path).text)
    missing = [item.answer for item in items if item.answer not in plain]
    assert not missing, f"answers not found in {doc_path.name}: {missing}"


def test_heldout_documents_are_of_three_styles():
    texts = {name: load_document(EVAL_SETS[name][0]).text for name in ("heldout", "heldout-notes", "heldout-prose")}
    assert "| --- |" in texts["heldout"]                                 # tables
    assert "## 1. " in texts["heldout-notes"] and "📌" in texts["heldout-notes"] and " = " in texts["heldout-notes"]
    assert "#" not in texts["heldout-prose"]                             # no heading at all


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dev", "heldout", "heldout-notes", "heldout-prose"])
def test_no_rag_or_cag_answer_is_a_heading_path(embedded_engine, name):
    """SmolLM2 on the first 3 questions of each set (about 25 s a set on a quiet 2-core CPU)."""
    doc_path, qa_path = EVAL_SETS[name]
    doc = load_document(doc_path)
    guard = HeadingGuard(doc.text)
    cfg = CompareConfig(max_new_tokens=24)
    for item in load_qa(qa_path, limit=3):
        for update in ask(embedded_engine.runtime, doc, item.question, "rag,cag", cfg):
            assert update.error is None
            assert " > " not in update.answer and not guard(update.answer), (item.question, update.answer)
