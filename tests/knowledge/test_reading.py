"""Answer reading on raw outputs the embedded model really produced (recorded during `eval --set dev` and
`--set heldout`): markup copied from the document, repeated lead-ins and echoed questions are not answers.

    .venv/bin/python -m pytest tests/knowledge/test_reading.py -q
"""

from __future__ import annotations

import pytest

from lab.knowledge.prompt import read_answer


@pytest.mark.parametrize("raw, answer", [
    # dev set (bundled guide)
    ("Question: What does RAG stand for?\n\nRAG stands for Retrieval-Augmented Generation.", "Retrieval-Augmented Generation"),
    ('RAG stands for "The American Red Cross."', "The American Red Cross"),
    ("The answer is:\n\nLangChain text splitter is a popular choice for chunking documents.",
     "a popular choice for chunking documents"),
    # held-out document (transit handbook): bold copied from the markdown
    ("The local currency of Kestrelford is **crowns**.", "crowns"),
    ("The central hub where every line meets is called **Corbel Street Interchange**.", "Corbel Street Interchange"),
    ("The answer is: **red**", "red"),
    # a heading echoed with its markup, as in the report
    ("### **2", "2"),
    ("- **Zone A**\n", "Zone A"),
])
def test_recorded_outputs_read_as_their_answer(raw, answer):
    assert read_answer(raw)[0] == answer


@pytest.mark.parametrize("raw", [
    "In RAG, chunk overlap stops a fact from being lost when it falls on what?",  # the question, unlabelled
    "Which keyword-based retrieval method is a form of sparse retrieval?",
    "The answer is: The answer is: The answer is:",
])
def test_echoes_and_bare_lead_ins_are_no_answer_yet(raw):
    assert read_answer(raw) == ("", False)


def test_an_echoed_question_line_is_skipped_for_the_next_line():
    assert read_answer("Which line reaches the airport?\nT4\n") == ("T4", True)


def test_a_negative_number_keeps_its_sign():
    assert read_answer("-0.5\n") == ("-0.5", True)
