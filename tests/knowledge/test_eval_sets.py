"""Held-out discipline: the bundled QA set is split into dev and test by a fixed rule, the second document's
answers are spans of it, and few-shot examples only ever come from dev.

    .venv/bin/python -m pytest tests/knowledge/test_eval_sets.py -q
"""

from __future__ import annotations

import json

import pytest

from lab.cli import main
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA
from lab.knowledge.compare import CompareConfig
from lab.knowledge.configs import EVAL_SETS
from lab.knowledge.documents import load_document, readable
from lab.knowledge.evaluation import load_qa
from lab.knowledge.prompt import MAX_SHOTS, demonstrations


def pairs(path) -> list[tuple[str, str]]:
    return [(item.question, item.answer) for item in load_qa(path)]


def test_dev_and_test_are_the_documented_split_of_the_bundled_set():
    every = pairs(BUNDLED_QA)
    # The rule in EVAL_SETS' docstring: 1-based line numbers divisible by 3 are test, the rest dev.
    assert pairs(EVAL_SETS["test"][1]) == [p for n, p in enumerate(every, start=1) if n % 3 == 0]
    assert pairs(EVAL_SETS["dev"][1]) == [p for n, p in enumerate(every, start=1) if n % 3 != 0]
    assert EVAL_SETS["dev"][0] == EVAL_SETS["test"][0] == BUNDLED_DOC


def test_heldout_set_is_another_document_with_span_answers():
    doc_path, qa_path = EVAL_SETS["heldout"]
    assert doc_path != BUNDLED_DOC
    items = load_qa(qa_path)
    assert len(items) >= 30
    assert len({item.question for item in items}) == len(items)
    plain = readable(load_document(doc_path).text)
    missing = [item.answer for item in items if item.answer not in plain]
    assert not missing, f"answers not found in the document: {missing}"
    bundled = {q for q, _ in pairs(BUNDLED_QA)}
    assert not bundled & {item.question for item in items}


@pytest.mark.parametrize("n", range(MAX_SHOTS + 1))
def test_few_shot_examples_come_only_from_dev(n):
    shots = demonstrations(n)
    assert len(shots) == n
    dev = pairs(EVAL_SETS["dev"][1])
    assert set(shots) <= set(dev)
    reported = set(pairs(EVAL_SETS["test"][1])) | set(pairs(EVAL_SETS["heldout"][1]))
    assert not set(shots) & reported
    # Taken from the end of dev, in file order, so `eval --set dev --limit N` scores questions that are not examples.
    places = [dev.index(pair) for pair in shots]
    assert places == sorted(places) and all(p >= len(dev) - 2 * MAX_SHOTS for p in places)
    # The model copies the examples' look: never more than one purely numeric answer among them.
    assert sum(answer.replace(".", "").isdigit() for _, answer in shots) <= 1


@pytest.mark.parametrize("bad", [-1, MAX_SHOTS + 1, 1.5, True])
def test_few_shot_count_is_checked(bad):
    with pytest.raises(ValueError, match="few_shot"):
        CompareConfig(few_shot=bad)


def test_eval_by_set_name_leaves_out_the_few_shot_questions(tiny_engine, monkeypatch, tmp_path, capsys):
    """`eval --set dev` reads the dev file; a question shown as an example is not scored."""
    monkeypatch.setenv("LAB_DATA_DIR", str(tiny_engine.settings.data_dir))
    monkeypatch.setenv("LAB_MODEL", tiny_engine.settings.model_id)
    monkeypatch.setenv("LAB_LOAD_IN_4BIT", "0")
    last = pairs(EVAL_SETS["dev"][1])[-1][0]
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": last, "answer": "x"}) + "\n"
                  + json.dumps({"question": "what is it ?", "answer": "y"}) + "\n", encoding="utf-8")
    out = tmp_path / "result.json"
    assert main(["eval", "--qa", str(qa), "--doc", str(BUNDLED_DOC), "--methods", "base", "--few-shot", "1",
                 "--max-new-tokens", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["question"] for row in result["rows"]] == ["what is it ?"]
    assert "left out 1 question" in capsys.readouterr().err


@pytest.mark.slow
def test_heldout_document_is_3_to_5k_tokens_of_the_embedded_tokenizer():
    from transformers import AutoTokenizer

    from lab.core.settings import LabSettings
    from lab.inference.models import materialise_embedded
    tokenizer = AutoTokenizer.from_pretrained(materialise_embedded(LabSettings().data_dir / "models"))
    n = len(tokenizer(load_document(EVAL_SETS["heldout"][0]).text).input_ids)
    assert 3000 <= n <= 5000
