"""Compare: every method answers on a tiny model with its own costs; bad requests are refused clearly.

    .venv/bin/python -m pytest tests/test_compare.py -q
"""

from __future__ import annotations

import json

import pytest
import torch

from lab.cli import main
from lab.knowledge.cag import CagConfig
from lab.knowledge.compare import CompareConfig, MethodUpdate, ask, parse_methods, stream_compare
from lab.knowledge.documents import document_from_text
from lab.knowledge.prompt import read_answer, short_answer
from lab.knowledge.rag import RagConfig

CFG = CompareConfig(max_new_tokens=6, stop_at_answer=False, cag=CagConfig(reserve_tokens=32),
                    rag=RagConfig(chunk_size=100, chunk_overlap=10, top_k=2))
QUESTION = "what is the capital of france ?"


@pytest.fixture
def doc():
    return document_from_text("tiny.md", "the capital of france is paris . the river of the city is one two three . " * 4)


@pytest.fixture
def adapter(tiny_engine, tiny_model_dir):
    """A LoRA adapter with non-zero B matrices, saved as <data>/adapters/tiny-ft like a finished job."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=1.0)  # B starts at zero; without this the adapter changes nothing
    path = tiny_engine.settings.subdir("adapters") / "tiny-ft"
    model.save_pretrained(path)
    return path


def test_every_method_answers_with_its_costs(tiny_engine, doc):
    rows = {u.method: u for u in ask(tiny_engine.runtime, doc, QUESTION, "base,rag,cag,full", CFG)}
    assert list(rows) == ["base", "rag", "cag", "full"]
    for row in rows.values():
        assert row.done and row.error is None and row.text
        m = row.metrics
        assert m["ttft_s"] > 0 and m["total_s"] >= m["ttft_s"] and m["context_tokens"] > 0
        assert set(m) >= {"retrieval_ms", "ttft_s", "decode_tokens_per_s", "total_s", "context_tokens", "cache_mb"}
    assert rows["rag"].metrics["retrieval_ms"] > 0 and rows["rag"].chunks
    assert rows["rag"].chunks == sorted(rows["rag"].chunks, key=lambda c: -c.score)
    assert rows["cag"].metrics["cache_mb"] > 0 and rows["cag"].metrics["kv_len"] > 0
    assert rows["cag"].metrics["crop_ms"] >= 0
    assert rows["base"].metrics["retrieval_ms"] is None and rows["base"].metrics["cache_mb"] is None
    # CAG prefills only the question on top of the cache, over exactly the tokens full context sees.
    assert rows["cag"].metrics["context_tokens"] == rows["full"].metrics["context_tokens"]
    assert rows["cag"].text == rows["full"].text
    assert rows["base"].metrics["context_tokens"] < rows["rag"].metrics["context_tokens"] < rows["full"].metrics["context_tokens"]


def test_updates_stream_per_method_in_order(tiny_engine, doc):
    updates = list(stream_compare(tiny_engine.runtime, doc, QUESTION, ["base", "cag"], CFG))
    assert all(isinstance(u, MethodUpdate) for u in updates)
    assert [u.method for u in updates if u.done] == ["base", "cag"]
    first_cag = next(i for i, u in enumerate(updates) if u.method == "cag")
    assert all(u.method == "base" for u in updates[:first_cag])  # one method after another
    cag = [u for u in updates if u.method == "cag"]
    assert len(cag) > 1 and all(b.text.startswith(a.text) for a, b in zip(cag, cag[1:]))
    assert json.dumps(updates[-1].as_dict())  # plain data for a UI or JSON


def test_fine_tuned_adapter_column(tiny_engine, doc, adapter):
    rows = {u.method: u for u in ask(tiny_engine.runtime, doc, QUESTION, "base,ft:tiny-ft,cag,full", CFG)}
    assert all(row.error is None for row in rows.values())
    assert rows["cag"].text == rows["full"].text  # with an adapter loaded, CAG still runs on the plain base
    assert rows["ft:tiny-ft"].metrics["context_tokens"] == rows["base"].metrics["context_tokens"]  # same prompt
    logits = {}
    for name in (None, "tiny-ft"):
        with tiny_engine.sessions.use(tiny_engine.runtime.spec(), adapter=name) as loaded:
            logits[name] = loaded.model(input_ids=torch.tensor([[7, 8, 9]])).logits
    assert not torch.allclose(logits[None], logits["tiny-ft"])  # the adapter really is applied
    # A folder path works too, and base still answers without the adapter afterwards.
    by_path = ask(tiny_engine.runtime, doc, QUESTION, [f"ft:{adapter}", "base"], CFG)
    assert by_path[0].error is None and by_path[1].text == rows["base"].text


def test_empty_question_is_refused(tiny_engine, doc):
    for question in ("", "   \n"):
        with pytest.raises(ValueError, match="question is empty"):
            list(stream_compare(tiny_engine.runtime, doc, question, "base", CFG))


def test_unknown_adapter_before_any_exists_says_how_to_train(tiny_engine, doc):
    with pytest.raises(ValueError, match="no LoRA adapter has been trained yet.*teach this document.*python -m lab train"):
        ask(tiny_engine.runtime, doc, QUESTION, "base,ft:missing", CFG)


def test_unknown_adapter_names_the_available_ones(tiny_engine, doc, adapter):
    with pytest.raises(ValueError, match="Unknown adapter 'missing'. Available adapters: tiny-ft"):
        ask(tiny_engine.runtime, doc, QUESTION, "ft:missing", CFG)


@pytest.mark.parametrize("methods, message", [("", "No method"), ("rag,telepathy", "Unknown method 'telepathy'"),
                                              ("ft:", "Unknown method 'ft:'")])
def test_bad_method_lists(methods, message):
    with pytest.raises(ValueError, match=message):
        parse_methods(methods)


def test_method_list_is_cleaned():
    assert parse_methods(" rag, cag,,rag ,ft:x") == ["rag", "cag", "ft:x"]


@pytest.mark.parametrize("text, answer", [
    ("RAG stands for Retrieval-Augmented Generation.", "Retrieval-Augmented Generation"),
    ("The answer is: \nLow-Rank Adaptation", "Low-Rank Adaptation"),
    ("A typical weight decay for fine-tuning is 0.01. It keeps", "0.01"),
    ("8,192", "8,192"),
    ("Answer: 2e-4\nQuestion: next", "2e-4"),
    ("Question: What does RAG stand for?\nRetrieval-Augmented Generation", "Retrieval-Augmented Generation"),
    ("The learning rate is usually 2e-5.", "2e-5"),
    ("", ""),
])
def test_short_answer_reading(text, answer):
    assert short_answer(text) == answer


def test_answer_is_complete_once_its_sentence_or_line_ends():
    assert read_answer("Paris") == ("Paris", False)
    assert read_answer("Paris.\n") == ("Paris", True)
    assert read_answer("It is Paris. The") == ("Paris", True)
    assert read_answer("The answer is:\n") == ("", False)
    assert read_answer("Question: What is it?\n") == ("", False)  # an echoed question: keep decoding


def test_cli_ask_json(tiny_engine, doc, tmp_path, monkeypatch, capsys):
    path = tmp_path / "tiny.md"
    path.write_text(doc.text)
    monkeypatch.setenv("LAB_DATA_DIR", str(tiny_engine.settings.data_dir))
    monkeypatch.setenv("LAB_MODEL", tiny_engine.settings.model_id)
    monkeypatch.setenv("LAB_LOAD_IN_4BIT", "0")
    assert main(["ask", "--doc", str(path), "--question", QUESTION, "--methods", "base,cag", "--json",
                 "--max-new-tokens", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {row["method"]: row for row in out["methods"]}
    assert rows["base"]["error"] is None and rows["base"]["metrics"]["ttft_s"] > 0
    # The default 256-token reserve does not fit beside this document in the tiny 256-position
    # window: the CAG column says so while the others answer.
    assert "too long" in rows["cag"]["error"] and "256" in rows["cag"]["error"]


def test_cli_ask_refuses_an_empty_question(capsys):
    assert main(["ask", "--question", " ", "--methods", "base"]) == 2
    assert "question is empty" in capsys.readouterr().err


def test_a_huge_question_is_refused_before_tokenizing(tiny_engine, doc, monkeypatch):
    # No model, so no tokenizer: the refusal must come before the session manager lends one.
    monkeypatch.setattr(tiny_engine.sessions, "_loader", lambda spec: pytest.fail("loaded a model to tokenize"))
    question = "why? " * 2_000_000  # 10 MB
    with pytest.raises(ValueError, match="10,000,000 characters; the limit is 4,000"):
        list(stream_compare(tiny_engine.runtime, doc, question, "base,rag,cag,full", CFG))
    assert tiny_engine.devices.stats()["entries"] == []
