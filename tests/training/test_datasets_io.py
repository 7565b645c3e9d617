"""Dataset files: the four formats, weighted mixing, held-out splits, and errors that name the line."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from lab.core.settings import REPO_ROOT
from lab.training.configs.base import DatasetSpec
from lab.training.data.datasets import (
    DatasetFormatError,
    convert_qa_file,
    load_mixture,
    load_rows,
    load_train_eval,
    mix_rows,
)

USER = {"role": "user", "content": "What is the capital of France?"}
ASSISTANT = {"role": "assistant", "content": "Paris."}


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("fmt, row, prompt", [
    ("qa", {"question": "What is the capital of France?", "answer": "Paris."}, [USER]),
    ("instruction", {"instruction": "What is the capital of France?", "response": "Paris."}, [USER]),
    ("instruction", {"instruction": "Answer.", "input": "Capital of France?", "response": "Paris."},
     [{"role": "user", "content": "Answer.\n\nCapital of France?"}]),
    ("prompt_completion", {"prompt": "What is the capital of France?", "completion": "Paris."}, [USER]),
    ("prompt_completion", {"prompt": [USER], "completion": [ASSISTANT]}, [USER]),
    ("messages", {"messages": [{"role": "system", "content": "Be brief."}, USER, ASSISTANT]},
     [{"role": "system", "content": "Be brief."}, USER]),
])
def test_every_format_becomes_conversational_prompt_completion(tmp_path, fmt, row, prompt):
    rows = load_rows(write_jsonl(tmp_path / "d.jsonl", [row, "", row]), fmt)  # blank lines are skipped
    assert len(rows) == 2
    assert rows[0] == {"prompt": prompt, "completion": [ASSISTANT]}


@pytest.mark.parametrize("fmt, bad, field", [
    ("qa", {"question": "Q?"}, "answer"),
    ("qa", {"question": "Q?", "answer": ""}, "answer"),
    ("instruction", {"instruction": "Q?", "output": "A"}, "response"),
    ("prompt_completion", {"prompt": "Q?"}, "completion"),
    ("messages", {"messages": [USER]}, "messages"),
    ("messages", {"messages": [{"role": "robot", "content": "hi"}, ASSISTANT]}, r"messages\[0\]"),
    ("messages", {"conversation": [USER, ASSISTANT]}, "messages"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, fmt, bad, field):
    good = {"qa": {"question": "Q?", "answer": "A"}, "instruction": {"instruction": "Q?", "response": "A"},
            "prompt_completion": {"prompt": "Q?", "completion": "A"}, "messages": {"messages": [USER, ASSISTANT]}}
    path = write_jsonl(tmp_path / "broken.jsonl", [good[fmt], good[fmt], bad])
    with pytest.raises(DatasetFormatError, match=rf"broken\.jsonl line 3: .*{field}"):
        load_rows(path, fmt)


def test_bad_json_and_missing_file_are_named(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ['{"question": "Q?", "answer": "A"}', '{"question": "Q?",'])
    with pytest.raises(DatasetFormatError, match=r"x\.jsonl line 2 is not valid JSON"):
        load_rows(path, "qa")
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_rows(tmp_path / "nope.jsonl", "qa")


def test_mixing_follows_relative_weights(tmp_path):
    a = [{"prompt": [USER], "completion": [{"role": "assistant", "content": f"a{i}"}]} for i in range(10)]
    b = [{"prompt": [USER], "completion": [{"role": "assistant", "content": f"b{i}"}]} for i in range(10)]
    mixed = mix_rows([(a, 3.0), (b, 1.0)], seed=0)
    counts = Counter(row["completion"][0]["content"][0] for row in mixed)
    assert counts == {"a": 15, "b": 5}  # 20 rows in all, split 3:1; a is repeated to reach 15
    assert len({row["completion"][0]["content"] for row in mixed if row["completion"][0]["content"][0] == "a"}) == 10
    assert mix_rows([(a, 3.0), (b, 1.0)], seed=0) == mixed  # the seed fixes the mixture


def test_mixture_of_formats_is_one_trl_dataset(tmp_path):
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"question": f"Q{i}?", "answer": "A"} for i in range(6)])
    msgs = write_jsonl(tmp_path / "m.jsonl", [{"messages": [USER, ASSISTANT]}] * 2)
    data = load_mixture([DatasetSpec(qa, 1, "qa"), DatasetSpec(msgs, 1, "messages")], seed=1)
    assert data.column_names == ["prompt", "completion"]
    assert len(data) == 8


def test_held_out_file_or_fraction():
    qa, held = (DatasetSpec("assets/knowledge/qa.jsonl", 1, "qa"), DatasetSpec("assets/knowledge/qa_heldout.jsonl",
                                                                              1, "qa"))
    train, evaluation = load_train_eval([qa], held, 0.0, seed=0)
    assert (len(train), len(evaluation)) == (84, 20)
    train, evaluation = load_train_eval([qa], None, 0.25, seed=0)
    assert (len(train), len(evaluation)) == (63, 21)
    assert load_train_eval([qa], None, 0.0, seed=0)[1] is None


def test_convert_bundled_qa_to_messages(tmp_path):
    out = convert_qa_file(REPO_ROOT / "assets/knowledge/qa.jsonl", tmp_path / "qa_messages.jsonl")
    rows = load_rows(out, "messages")
    assert len(rows) == 84
    first = json.loads(out.read_text().splitlines()[0])
    assert first["messages"][0] == {"role": "user", "content": "What does RAG stand for?"}
    assert first["messages"][1]["role"] == "assistant"
