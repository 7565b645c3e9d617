"""Q&A dataset builder: schema-constrained JSON, the validator, retries, JSONL output, CLI, endpoint.

Fast tests use a tiny random Llama over a byte-level tokenizer (every byte is a token, so the
JSON grammar can always be followed; the word-level tokenizer of conftest has no '{' or '"').
The slow tests run the embedded SmolLM2-135M.
"""

from __future__ import annotations

import argparse
import json
import threading
from contextlib import nullcontext
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from lab.knowledge.documents import document_from_text
from lab.training.data.builder import (
    Attempt,
    BuilderConfig,
    QAPair,
    build_dataset,
    build_from_chunks,
    constrained_generate,
    grammar_compiler,
    write_jsonl,
)
from lab.training.data.datasets import load_rows
from lab.training.data.qa_prompt import chunk_messages, parse_pairs, qa_schema, question_key, validate_pair
from support import CHAT_TEMPLATE, build_tiny_llama

CHUNK = ("SmolLM2-135M-Instruct is a small chat model released by Hugging Face. Its context window is 8,192 "
         "tokens. It has 30 transformer layers and a vocabulary of 49,152 tokens.")


def build_byte_tokenizer():
    """A byte-level BPE tokenizer with no merges: 256 byte tokens plus the chat specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    special = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
    vocab = {tok: i for i, tok in enumerate(special + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", additional_special_tokens=special[4:])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_byte_llama(vocab_size: int):
    """conftest's tiny Llama with room for byte-level prompts (one token per byte)."""
    model = build_tiny_llama(vocab_size)
    model.config.max_position_embeddings = 2048  # rotary embeddings need no learned positions
    return model


@pytest.fixture(scope="module")
def byte_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-byte-llama")
    tok = build_byte_tokenizer()
    build_byte_llama(len(tok)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def byte_engine(tmp_path, byte_model_dir):
    from lab.core.device import choose_device
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    settings = LabSettings(data_dir=tmp_path / "data", model_id=str(byte_model_dir), memory_budget_gb=1.0,
                           load_in_4bit=False, auth="")
    return Engine(settings, device=choose_device(has_cuda=False, has_flash_attn=False))


def small_cfg(**overrides) -> BuilderConfig:
    """Short limits so the tiny byte-level model (one token per byte) finishes quickly."""
    return BuilderConfig(**({"pairs_per_chunk": 2, "max_question_chars": 24, "max_answer_chars": 24,
                             "max_new_tokens": 400, "chunk_size": 200, "chunk_overlap": 0} | overrides))


# ---- config --------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("pairs_per_chunk", 0), ("pairs_per_chunk", 11), ("pairs_per_chunk", 2.5), ("chunk_size", 50),
    ("chunk_overlap", 600), ("chunk_overlap", -1), ("max_chunks", 0), ("max_new_tokens", 8),
    ("temperature", -0.1), ("retry_temperature", 3.0), ("retries", -1), ("max_question_chars", 200),
    ("max_answer_chars", 1), ("min_answer_overlap", 1.5), ("base_url", "localhost:8000"), ("seed", "x"),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BuilderConfig(**{field: value})


def test_endpoint_needs_a_model_name():
    with pytest.raises(ValueError, match="endpoint_model"):
        BuilderConfig(base_url="http://localhost:8000/v1")


# ---- validator -----------------------------------------------------------------------------

GOOD = {"question": "How many transformer layers does the model have?", "answer": "30 transformer layers"}


@pytest.mark.parametrize("pair, reason", [
    ("just text", "not an object"),
    ({"question": "What?"}, "not an object"),
    ({"question": "   ", "answer": "30"}, "empty question"),
    ({"question": "How many layers?", "answer": ""}, "empty answer"),
    ({"question": "What " + "x" * 200 + "?", "answer": "30"}, "question too long"),
    ({"question": "How many layers?", "answer": "30 " * 60}, "answer too long"),
    ({"question": "The number of layers", "answer": "30"}, "no '?'"),
    ({"question": "Who made the model?", "answer": "OpenAI in San Francisco"}, "not grounded"),
    ({"question": "What is the chat model?", "answer": "The chat model"}, "only repeats words of the question"),
    (GOOD, "duplicate"),
])
def test_validator_rejects_each_reason(pair, reason):
    seen = {question_key(GOOD["question"])} if reason == "duplicate" else set()
    assert reason in validate_pair(pair, CHUNK, seen)


def test_validator_keeps_a_good_pair_and_ignores_case_for_duplicates():
    assert validate_pair(GOOD, CHUNK) is None
    assert validate_pair({"question": "what ARE the context-window tokens?", "answer": "8,192"}, CHUNK) is None
    seen = {question_key("How many transformer layers does the model have ?")}
    assert validate_pair(GOOD, CHUNK, seen) == "duplicate question"


def test_parse_pairs_wants_exactly_n_items():
    text = json.dumps([GOOD, GOOD])
    assert parse_pairs(text, 2) == [GOOD, GOOD]
    assert parse_pairs(json.dumps({"pairs": [GOOD]}), 1) == [GOOD]  # the endpoint's JSON-mode wrapper
    assert parse_pairs(text, 3) is None
    assert parse_pairs('1. Question: What is it?', 2) is None


# ---- the grammar -----------------------------------------------------------------------------

def test_schema_grammar_accepts_only_the_asked_shape():
    import xgrammar as xgr
    tok = build_byte_tokenizer()
    compiler = grammar_compiler(build_byte_llama(len(tok)), tok, "test-byte-tokenizer")
    compiled = compiler.compile_json_schema(json.dumps(qa_schema(2, BuilderConfig())), any_whitespace=False)

    def accepts(text: str) -> bool:
        matcher = xgr.GrammarMatcher(compiled)
        return matcher.accept_string(text) and matcher.is_completed()

    pair = '{"answer": "8,192 tokens", "question": "What is the window?"}'
    assert accepts(f"[{pair}, {pair}]")
    assert not accepts(f"[{pair}]")  # exactly n items
    assert not accepts(f"[{pair}, {pair}, {pair}]")
    swapped = '{"question": "What is the window?", "answer": "8,192 tokens"}'
    assert not accepts(f"[{swapped}, {swapped}]")  # the answer comes first
    assert not accepts(f"[{pair}, {pair.replace('window?', 'window')}]")  # a question ends with '?'
    assert not accepts(f"[{pair}, {pair.replace('What is', 'Tell me')}]")  # ...and opens with a question word
    assert not accepts(f"[{pair}, {pair.replace('8,192', 'a' * 130)}]")  # answer length limit
    assert not accepts(f"[{pair}, {pair.replace('8,192', chr(7))}]")  # no control characters


# ---- retries ---------------------------------------------------------------------------------

def test_retry_path_with_a_scripted_generator():
    calls = []
    good2 = {"question": "What is the context window?", "answer": "8,192 tokens"}
    outputs = iter([
        Attempt('1. Question: How many layers?\n2. Answer: 30', 20, "stop"),  # not JSON
        Attempt(json.dumps([GOOD, GOOD]), 30, "stop"),  # second is a duplicate of the first
        Attempt(json.dumps([good2]), 15, "stop"),  # asked only for the one still missing
    ])

    def generate(chunk: str, n: int, temperature: float, seed: int) -> Attempt:
        calls.append((n, temperature, seed))
        return next(outputs)

    cfg = BuilderConfig(pairs_per_chunk=2, retries=3, temperature=0.0, retry_temperature=0.9)
    events = []
    result = build_from_chunks([CHUNK], cfg, lambda: nullcontext(generate), lambda *e: events.append(e))
    assert [c[0] for c in calls] == [2, 2, 1]
    assert [c[1] for c in calls] == [0.0, 0.9, 0.9]
    assert len({c[2] for c in calls}) == 3  # a new seed per attempt
    assert [p.question for p in result.pairs] == [GOOD["question"], good2["question"]]
    assert [r.reason.split(" (")[0] for r in result.rejected] == ["invalid JSON", "duplicate question"]
    stats = result.chunks[0]
    assert (stats.attempts, stats.valid_json, stats.accepted, stats.rejected) == (3, 2, 2, 2)
    assert result.valid_json_rate == pytest.approx(2 / 3)
    assert events[0][:2] == (0, 1) and events[-1][:2] == (1, 1)


def test_tiny_model_constrained_output_is_json_but_ungrounded_so_it_retries(byte_engine):
    """The real constrained decoder on a random model: schema-valid JSON, nonsense content,
    every pair rejected, so each chunk uses all its retries."""
    doc = document_from_text("notes.txt", CHUNK)
    cfg = small_cfg(retries=2, max_chunks=1)
    result = build_dataset(byte_engine.runtime, doc, cfg)
    stats = result.chunks[0]
    assert stats.attempts == cfg.retries + 1
    stopped = [r for r in result.rejected if not r.reason.startswith("invalid JSON")]
    assert stats.valid_json >= 1 and stats.valid_json == len({r.attempt for r in stopped})
    assert any("not grounded" in r.reason for r in result.rejected)
    assert result.pairs == []
    assert byte_engine.sessions.queue.snapshot() == {"running": None, "waiting": []}  # the GPU slot was released


def test_constrained_generate_stops_at_the_budget(byte_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lab.inference.generate import prompt_ids
    tok = AutoTokenizer.from_pretrained(byte_model_dir)
    model = AutoModelForCausalLM.from_pretrained(byte_model_dir).eval()
    compiled = grammar_compiler(model, tok, "byte-budget").compile_json_schema(
        json.dumps(qa_schema(2, small_cfg())), any_whitespace=False)
    out = constrained_generate(model, tok, prompt_ids(tok, chunk_messages(CHUNK, 2)), compiled, max_new_tokens=12)
    assert (out.finish_reason, out.new_tokens) == ("length", 12)
    assert out.text == '[{"answer": '  # the grammar's forced opening, one byte per token
    assert parse_pairs(out.text, 2) is None


# ---- output ----------------------------------------------------------------------------------

def test_written_jsonl_loads_as_qa_training_data(tmp_path):
    pairs = [QAPair(GOOD["question"], GOOD["answer"], 0), QAPair("What is the window?", "8,192 tokens", 1)]
    path = write_jsonl(pairs, tmp_path / "out" / "qa.jsonl")
    rows = load_rows(path, "qa")
    assert rows[0] == {"prompt": [{"role": "user", "content": GOOD["question"]}],
                       "completion": [{"role": "assistant", "content": GOOD["answer"]}]}
    assert json.loads(path.read_text().splitlines()[1])["chunk_id"] == 1


# ---- endpoint and CLI ------------------------------------------------------------------------

@pytest.fixture
def stub_endpoint():
    """A local OpenAI-compatible /chat/completions that answers in JSON mode with two pairs."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            content = json.dumps({"pairs": [GOOD, {"question": "What is the context window?", "answer": "8,192 tokens"}]})
            reply = json.dumps({"choices": [{"message": {"content": content}, "finish_reason": "stop"}],
                                "usage": {"completion_tokens": 40}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", seen
    server.shutdown()


def test_endpoint_path_uses_json_mode_and_the_key_from_the_env(stub_endpoint, tiny_engine, monkeypatch):
    url, seen = stub_endpoint
    monkeypatch.setenv("LAB_TEST_KEY", "sk-test")
    cfg = BuilderConfig(base_url=url, endpoint_model="served-model", api_key_env="LAB_TEST_KEY", pairs_per_chunk=2)
    result = build_dataset(tiny_engine.runtime, document_from_text("notes.txt", CHUNK), cfg)
    assert len(result.pairs) == 2 and result.valid_json_rate == 1.0
    request = seen[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    assert request["body"]["response_format"] == {"type": "json_object"}
    assert request["body"]["model"] == "served-model"
    assert '{"pairs": [' in request["body"]["messages"][-1]["content"]
    assert tiny_engine.sessions.stats()["entries"] == []  # no local model was loaded


def test_cli_dataset_build_writes_a_loadable_file(stub_endpoint, tiny_engine, tmp_path, capsys):
    from lab.cli.dataset import add_commands
    url, _ = stub_endpoint
    doc = tmp_path / "notes.md"
    doc.write_text(CHUNK + "\n\n" + CHUNK.replace("30", "thirty"), encoding="utf-8")
    out = tmp_path / "qa.jsonl"
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dataset", "build", "--doc", str(doc), "--out", str(out), "--pairs-per-chunk", "2",
                              "--max-chunks", "1", "--base-url", url, "--endpoint-model", "m", "--json"])
    args.fn(tiny_engine, args)
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 2 and summary["chunks"] == 1
    assert len(load_rows(out, "qa")) == 2


def test_cli_rejects_a_bad_option_before_loading_anything(tiny_engine, tmp_path):
    from lab.cli.dataset import add_commands
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dataset", "build", "--out", str(tmp_path / "x.jsonl"), "--pairs-per-chunk", "0"])
    with pytest.raises(ValueError, match="pairs_per_chunk"):
        args.fn(tiny_engine, args)
    assert tiny_engine.sessions.stats()["entries"] == []


# ---- the embedded model ----------------------------------------------------------------------

@pytest.mark.slow
def test_embedded_model_writes_valid_json_only_when_constrained(embedded_engine):
    """SmolLM2-135M asked for JSON in words (greedy) does not produce the asked list; the same
    prompt under the schema constraint does."""
    from lab.core.settings import BUNDLED_DOC
    from lab.inference.generate import GenerationSettings, generate_text, prompt_ids
    from lab.knowledge.documents import load_document
    from lab.training.data.builder import document_chunks
    cfg = BuilderConfig(pairs_per_chunk=2, max_question_chars=80, max_answer_chars=60, max_chunks=1)
    chunk = document_chunks(load_document(BUNDLED_DOC), cfg)[0]
    with embedded_engine.sessions.use(embedded_engine.runtime.spec()) as loaded:
        ids = prompt_ids(loaded.tokenizer, chunk_messages(chunk, 2))
        free = generate_text(loaded.model, loaded.tokenizer, ids, GenerationSettings(max_new_tokens=96))
        compiled = grammar_compiler(loaded.model, loaded.tokenizer, loaded.spec.key).compile_json_schema(
            json.dumps(qa_schema(2, cfg)), any_whitespace=False)
        constrained = constrained_generate(loaded.model, loaded.tokenizer, ids, compiled, max_new_tokens=160)
    assert parse_pairs(free.text, 2) is None, free.text  # observed: prose, not the asked JSON list
    items = parse_pairs(constrained.text, 2)
    assert constrained.finish_reason == "stop" and items is not None, constrained.text
    for item in items:
        assert set(item) == {"question", "answer"}
        assert item["question"].endswith("?") and len(item["question"]) <= cfg.max_question_chars
        assert 1 <= len(item["answer"]) <= cfg.max_answer_chars


@pytest.mark.slow
def test_embedded_build_dataset_end_to_end(embedded_engine, tmp_path):
    from lab.core.settings import BUNDLED_DOC
    from lab.knowledge.documents import load_document
    cfg = BuilderConfig(pairs_per_chunk=2, max_chunks=1, retries=1, max_question_chars=80, max_answer_chars=60,
                        max_new_tokens=160)
    events = []
    result = build_dataset(embedded_engine.runtime, load_document(BUNDLED_DOC), cfg, lambda *e: events.append(e))
    assert result.valid_json_rate == 1.0, [r.item for r in result.rejected]
    assert result.chunks[0].attempts in (1, 2)
    assert len(result.pairs) + len(result.rejected) >= 2
    for pair in result.pairs:  # kept pairs passed the validator: a real question, short, answer words in the text
        assert pair.question.endswith("?") and len(pair.answer) < cfg.max_answer_chars
    assert all(r.reason for r in result.rejected)
    assert events[-1][:2] == (1, 1)
    if result.pairs:
        assert len(load_rows(write_jsonl(result.pairs, tmp_path / "qa.jsonl"), "qa")) == len(result.pairs)
