"""One card renderer: a question reopened from History is drawn as it was shown live in Compare.

    .venv/bin/python -m pytest -q tests/app/test_cards.py
"""

from __future__ import annotations

from lab.knowledge.compare import MethodUpdate
from tabs.cards import render_cards, stored_cards

METRICS = {"retrieval_ms": 12.5, "ttft_s": 0.25, "decode_tokens_per_s": 20.0, "total_s": 1.5, "context_tokens": 310,
           "cache_mb": None}


def test_a_reopened_question_shows_the_same_cards_as_the_live_one():
    live = MethodUpdate("rag", text="Paris.", answer="Paris", metrics=METRICS, done=True, finish_reason="eos")
    stored = [{"method": "rag", "answer": "Paris", "text": "Paris.", "error": None, "finish_reason": "eos",
               "metrics": METRICS, "chunks": []}]
    assert stored_cards(stored, "compare-cards") == render_cards({"rag": live})
    reopened = stored_cards(stored, "history-cards")
    assert "id='history-cards'" in reopened and "RAG (retrieved chunks)" in reopened and "<b>Paris</b>" in reopened
    assert "12.5 ms" in reopened and "310" in reopened


def test_a_stored_error_and_retrieved_chunks_are_drawn():
    stored = [{"method": "cag", "answer": "", "text": "", "error": "too long", "metrics": {}, "chunks": []},
              {"method": "rag", "answer": "x", "text": "x", "error": None, "metrics": METRICS,
               "chunks": [{"score": 0.91, "text": "the capital of france is paris"}]}]
    html = stored_cards(stored, "history-cards")
    assert "⚠️ too long" in html and "<b>0.91</b> the capital of france is paris" in html
