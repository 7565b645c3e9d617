"""Compare's Settings reach what runs: an evaluation through the app's API is measured with the RAG chunking
and top-k picked there, and keeps them beside its scores in the user's workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("chunking", ["recursive", "markdown"])
def test_an_evaluation_runs_with_the_settings_picked_and_keeps_them(tiny_app, chunking):
    client = Client(tiny_app.url, verbose=False)
    # qa_file, limit, methods, chunk size, overlap, top-k, max_new_tokens, stop at answer, 4-bit, chunking
    table, _, files, status = client.predict(handle_file(str(tiny_app.qa)), 1, ["base", "rag"], 300, 30, 2, 4, True, False,
                                     chunking, api_name="/compare_eval")
    assert [row[0] for row in table["data"]] == ["base", "rag"] and status.startswith("Scored 2 answers")
    saved = json.loads(Path(next(f for f in files if str(f).endswith(".json"))).read_text())
    assert saved["settings"]["rag"]["chunking"] == chunking
    assert (saved["settings"]["rag"]["top_k"], saved["settings"]["rag"]["chunk_size"]) == (2, 300)
    assert saved["settings"]["max_new_tokens"] == 4
