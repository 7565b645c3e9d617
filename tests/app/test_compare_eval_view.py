"""What the Compare tab shows of a finished evaluation: recall@k beside the answer scores when a method retrieved.

    .venv/bin/python -m pytest -q tests/app/test_compare_eval_view.py
"""

from __future__ import annotations

from tabs.compare import chart_scores, eval_status, score_chart

SCORES = ("exact_match", "f1", "rouge_l", "bleu")
METHODS = {"base": {"f1": 0.02, "recall_at_k": None}, "rag": {"f1": 0.25, "recall_at_k": 0.9}}


def test_recall_is_charted_beside_f1_only_when_a_method_retrieved():
    assert chart_scores(METHODS, SCORES) == [*SCORES, "recall_at_k"]
    assert chart_scores({"base": METHODS["base"]}, SCORES) == list(SCORES)
    chart = score_chart(METHODS, chart_scores(METHODS, SCORES))
    assert list(chart[chart["bar"].str.startswith("recall@k")]["value"]) == [0.0, 0.9]


def test_the_status_line_says_how_often_retrieval_found_the_answer():
    result = {"cancelled": False, "answered": 4, "answers": 4, "questions": 2, "methods": METHODS, "elapsed_s": 3.0}
    text = eval_status(result, "eval-1")
    assert "rag: the reference was in a retrieved chunk for 90% of the questions" in text
    assert "base:" not in text
    assert "Retrieval" not in eval_status(result | {"methods": {"base": METHODS["base"]}}, "eval-1")
