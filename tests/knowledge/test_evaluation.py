"""Batch evaluation: QA files are validated line by line, results follow the documented schema.

    .venv/bin/python -m pytest tests/test_evaluate_qa.py -q
"""

from __future__ import annotations

import csv
import json
import threading

import pytest

from lab.cli import main
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA
from lab.knowledge.cag import CagConfig
from lab.knowledge.compare import CompareConfig
from lab.knowledge.documents import document_from_text, load_document
from lab.knowledge.evaluation import ROW_FIELDS, SCORES, evaluate, load_qa, write_csv, write_json
from lab.knowledge.rag import RagConfig

CFG = CompareConfig(max_new_tokens=4, cag=CagConfig(reserve_tokens=32),
                    rag=RagConfig(chunk_size=100, chunk_overlap=10, top_k=2))
SUMMARY_KEYS = {"exact_match", "f1", "rouge_l", "bleu", "latency_p50_s", "latency_p95_s", "ttft_p50_s"}


def write_lines(path, *lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bundled_sets_load():
    assert len(load_qa(BUNDLED_QA)) >= 60
    assert len(load_qa(BUNDLED_QA.with_name("qa_heldout.jsonl"))) >= 10
    assert [item.line for item in load_qa(BUNDLED_QA, limit=3)] == [1, 2, 3]


@pytest.mark.parametrize("bad, message", [
    ('{"question": "q", "answer": ', r"qa.jsonl line 3 is not valid JSON"),
    ('["q", "a"]', r"qa.jsonl line 3 must be a JSON object"),
    ('{"question": "q"}', r"qa.jsonl line 3 has no \"answer\" field"),
    ('{"question": "  ", "answer": "a"}', r"qa.jsonl line 3: \"question\" must be a non-empty string"),
    ('{"question": "q", "answer": 7}', r"qa.jsonl line 3: \"answer\" must be a non-empty string"),
])
def test_malformed_line_is_named(tmp_path, bad, message):
    path = write_lines(tmp_path / "qa.jsonl", '{"question": "a?", "answer": "a"}', "", bad)
    with pytest.raises(ValueError, match=message):
        load_qa(path)


def test_empty_or_missing_files(tmp_path):
    with pytest.raises(ValueError, match="no questions"):
        load_qa(write_lines(tmp_path / "empty.jsonl", "", "  "))
    with pytest.raises(ValueError, match="not found"):
        load_qa(tmp_path / "nope.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_qa(tmp_path / "bin.jsonl")
    with pytest.raises(ValueError, match="limit"):
        load_qa(BUNDLED_QA, limit=0)


def test_results_schema_progress_and_exports(tiny_engine, tmp_path):
    doc = document_from_text("tiny.md", "the capital of france is paris . the river is one two three . " * 4)
    path = write_lines(tmp_path / "qa.jsonl", '{"question": "what is the capital of france ?", "answer": "paris"}',
                       '{"question": "what is the river ?", "answer": "one two three"}')
    seen = []
    result = evaluate(tiny_engine.runtime, doc, load_qa(path), "base,rag,cag,full", CFG,
                      progress=lambda done, total, message: seen.append((done, total, message)))
    assert seen[0][:2] == (0, 8) and seen[-1][:2] == (8, 8) and [s[0] for s in seen] == list(range(9))
    assert set(result["methods"]) == {"base", "rag", "cag", "full"}
    for summary in result["methods"].values():
        assert SUMMARY_KEYS <= set(summary) and summary["n"] == 2 and summary["errors"] == 0
        for key in SCORES:
            assert 0.0 <= summary[key] <= 1.0
        assert 0 < summary["latency_p50_s"] <= summary["latency_p95_s"] and summary["ttft_p50_s"] > 0
    assert len(result["rows"]) == 8
    for row in result["rows"]:
        assert set(ROW_FIELDS) <= set(row) and row["error"] is None
        assert row["latency_s"] >= row["ttft_s"] > 0
    out = write_json(result, tmp_path / "out" / "result.json")
    assert json.loads(out.read_text())["methods"]["cag"].keys() >= SUMMARY_KEYS
    with write_csv(result["rows"], tmp_path / "rows.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 8 and list(table[0]) == list(ROW_FIELDS)


def test_a_method_that_cannot_run_is_reported_not_fatal(tiny_engine, tmp_path):
    long_doc = document_from_text("long.md", "the model is one two three . " * 60)
    items = load_qa(write_lines(tmp_path / "qa.jsonl", '{"question": "what is the model ?", "answer": "one"}'))
    result = evaluate(tiny_engine.runtime, long_doc, items, "cag,base", CFG)
    assert result["methods"]["cag"]["errors"] == 1 and result["methods"]["cag"]["f1"] is None
    assert "too long" in result["methods"]["cag"]["error"]
    assert result["methods"]["base"]["n"] == 1


def test_unknown_adapter_is_refused_before_running(tiny_engine, tmp_path):
    doc = document_from_text("tiny.md", "the capital of france is paris .")
    with pytest.raises(ValueError, match="Unknown adapter"):
        evaluate(tiny_engine.runtime, doc, load_qa(BUNDLED_QA, limit=1), "base,ft:nothing", CFG)


@pytest.mark.slow
def test_small_real_eval_on_embedded_model(embedded_engine, tmp_path, monkeypatch, capsys):
    """`python -m lab eval` end to end on SmolLM2 and the bundled guide (CAG cache reused from data/)."""
    out = tmp_path / "result.json"
    assert main(["eval", "--qa", str(BUNDLED_QA), "--methods", "base,rag,cag", "--limit", "3",
                 "--out", str(out), "--csv", str(tmp_path / "rows.csv")]) == 0
    result = json.loads(out.read_text())
    assert set(result["methods"]) == {"base", "rag", "cag"} and len(result["rows"]) == 9
    for summary in result["methods"].values():
        assert SUMMARY_KEYS <= set(summary) and summary["errors"] == 0
    # The first three questions (what RAG and CAG stand for, the window size) are in the guide.
    assert result["methods"]["cag"]["f1"] > result["methods"]["base"]["f1"]
    assert "[9/9]" in capsys.readouterr().err
    assert load_document(BUNDLED_DOC).name == result["document"]


def test_a_cancelled_evaluation_keeps_exactly_the_rows_it_scored(tiny_engine, tmp_path):
    """Cancel set after the second answer: the third is never asked, the two scored rows are summarised, and the
    result says it was cancelled and after how many answers."""
    doc = document_from_text("tiny.md", "the capital of france is paris . the river is one two three . " * 4)
    items = load_qa(write_lines(tmp_path / "qa.jsonl", *(f'{{"question": "what is the capital {n} ?", "answer": "paris"}}'
                                                         for n in ("one", "two", "three", "four"))))
    cancel = threading.Event()

    def progress(done, total, message):
        if done == 2:
            cancel.set()

    result = evaluate(tiny_engine.runtime, doc, items, "base,rag", CFG, progress=progress, cancel=cancel)
    assert result["cancelled"] is True and (result["answered"], result["answers"]) == (2, 8)
    assert [(r["method"], r["index"]) for r in result["rows"]] == [("base", 0), ("base", 1)]
    assert result["methods"]["base"]["n"] == 2 and result["methods"]["base"]["f1"] is not None
    assert result["methods"]["rag"]["n"] == 0 and "cancelled" in result["methods"]["rag"]["error"]
    # The same exports as a finished run: nothing in them breaks on the missing rows.
    assert len(list(csv.DictReader(write_csv(result["rows"], tmp_path / "rows.csv").open()))) == 2


def test_a_cancel_during_an_answer_drops_that_answer(tiny_engine, tmp_path, monkeypatch):
    """Cancel arriving while an answer streams: that answer is closed, not scored, and nothing after it runs."""
    from lab.knowledge import evaluation
    doc = document_from_text("tiny.md", "the capital of france is paris .")
    items = load_qa(write_lines(tmp_path / "qa.jsonl", '{"question": "what is it ?", "answer": "paris"}',
                                '{"question": "what is the city ?", "answer": "paris"}'))
    cancel, closed = threading.Event(), []
    real = evaluation.stream_compare

    def streamed(*args, **kwargs):
        stream = real(*args, **kwargs)
        try:
            for n, update in enumerate(stream):
                if n == 0 and args[2] == "what is the city ?":  # the second question has begun answering
                    cancel.set()
                yield update
        finally:
            closed.append(args[2])
            stream.close()

    monkeypatch.setattr(evaluation, "stream_compare", streamed)
    result = evaluate(tiny_engine.runtime, doc, items, "base", CFG, cancel=cancel)
    assert result["cancelled"] and len(result["rows"]) == 1 and result["rows"][0]["question"] == "what is it ?"
    assert closed == ["what is it ?", "what is the city ?"]


def test_without_a_qa_file_only_the_bundled_guide_has_questions(tiny_engine, tmp_path):
    """The bundled questions are about the bundled guide: an uploaded document without a QA file is refused with
    what to give instead, rather than scored on questions it cannot answer."""
    mine = document_from_text("notes.md", "the capital of france is paris .")
    with pytest.raises(ValueError, match=r"needs a QA file.*\.jsonl.*\"question\".*\"answer\""):
        tiny_engine.knowledge.evaluation_items(mine, None)
    knowledge = tiny_engine.knowledge
    assert len(knowledge.evaluation_items(knowledge.bundled_document(), None)) == len(load_qa(BUNDLED_QA))
    assert len(tiny_engine.knowledge.evaluation_items(tiny_engine.knowledge.bundled_document(), None, limit=3)) == 3
    qa = write_lines(tmp_path / "qa.jsonl", '{"question": "what is the capital ?", "answer": "paris"}')
    assert [i.question for i in tiny_engine.knowledge.evaluation_items(mine, qa)] == ["what is the capital ?"]
