"""Shared by the training tests: a small QA file the tiny jobs train on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    rows = [{"question": f"what is the capital of france {n} ?", "answer": f"paris is the capital {n} ."}
            for n in "one two three four five six seven eight".split()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
