"""The Train tab's dataset builder endpoints: build on a tiny model, edit, save into the workspace."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client, handle_file

from lab.training.configs.base import DatasetSpec
from lab.training.data.datasets import load_train_eval

pytestmark = pytest.mark.slow


def test_build_then_save_a_dataset_through_the_ui_api(tiny_app, tmp_path):
    client = Client(tiny_app.url, verbose=False)
    doc = tmp_path / "notes.md"
    doc.write_text("Paris is the capital of France. The river Seine runs through the city of Paris.")
    # The tiny model's 256-position window cannot hold a chunk prompt plus the builder's answer budget:
    # the build is refused with a message saying so (the embedded model's build is tested in
    # test_dataset_builder.py).
    with pytest.raises(Exception, match="exceeds the model's window"):
        client.predict(handle_file(str(doc)), 1, 1, api_name="/dataset_build")
    rows = {"headers": ["question", "answer"],
            "data": [["What is the capital of France?", "Paris"], ["Which river runs through Paris?", "the Seine"]]}
    message = client.predict(rows, "france_qa", api_name="/dataset_save")
    path = message.split("`")[1]
    lines = [json.loads(line) for line in open(path)]
    assert [row["answer"] for row in lines] == ["Paris", "the Seine"]
    train, _ = load_train_eval([DatasetSpec(path=path, format="qa")], None, 0.0, 0)
    assert len(train) == 2
    with pytest.raises(Exception, match="not allowed"):
        client.predict(rows, "../escape", api_name="/dataset_save")
