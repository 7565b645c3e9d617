"""Shared by the training tests: a small QA file the tiny jobs train on."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import write_qa_file


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    return write_qa_file(tmp_path_factory.mktemp("qa") / "qa.jsonl", 8)
