"""`bench cag --concurrent`: several questions on one document at once, explicit CAG against the batching engine
with and without prefix sharing, on a tiny model."""

from __future__ import annotations

import pytest

from lab.bench.served_cag import bench_served_cag
from lab.knowledge.cag import CagConfig
from lab.knowledge.compare import CompareConfig
from lab.knowledge.documents import document_from_text

pytestmark = pytest.mark.slow


def test_three_modes_answer_the_same_questions_alike(tiny_engine):
    doc = document_from_text("notes.md", "The lighthouse stands on the northern cape. " * 6)
    questions = ["where is the lighthouse ?", "what stands on the cape ?", "which cape ?"]
    cfg = CompareConfig(cag=CagConfig(reserve_tokens=48))  # the tiny model's window is 256 tokens
    result = bench_served_cag(tiny_engine.runtime, doc, questions, cfg, new_tokens=4)
    assert result["concurrent_questions"] == 3
    assert result["answers_agree"] == "3/3"  # greedy: the cache, the shared blocks and a fresh prefill agree
    for mode in ("explicit_cag", "served_cag", "full_no_sharing"):
        assert 0 < result[f"{mode}_ttft_p50_s"] <= result[f"{mode}_ttft_max_s"] <= result[f"{mode}_wall_s"]
    assert result["knowledge_tokens"] > len(questions[0].split())


def test_one_question_is_refused(tiny_engine):
    with pytest.raises(ValueError, match="at least two"):
        bench_served_cag(tiny_engine.runtime, document_from_text("d.md", "x"), ["only one ?"])
