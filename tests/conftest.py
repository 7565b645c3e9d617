"""Shared fixtures: a tiny random Llama with a locally built tokenizer, and the real engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests never touch the network: the Hub is unreachable on CI anyway, this only makes it fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
WORDS = ("the a of to and is in it what capital france paris city river model answer question cache "
         "token learn rate rank lora alpha data train test one two three four five six seven eight nine").split()


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    special = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
    vocab = {tok: i for i, tok in enumerate(special + WORDS + list("?.,!"))}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", additional_special_tokens=special[4:])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    # 64 is the smallest width bitsandbytes 4-bit blocks accept, so the same model tests NF4 loading.
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return LlamaForCausalLM(config).eval()


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    tok = build_tiny_tokenizer()
    model = build_tiny_llama(len(tok), seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama folder, usable as a model id (local path)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> list[Path]:
    """Three different tiny models of equal size, for eviction tests."""
    return [save_tiny_model(tmp_path_factory.mktemp(f"tiny-llama-{i}"), seed=i + 1) for i in range(3)]


@pytest.fixture
def tiny_engine(tmp_path, tiny_model_dir):
    """An engine over a private data dir whose default model is the tiny Llama."""
    from lab.device import choose_device
    from lab.engine import Engine
    from lab.settings import LabSettings
    settings = LabSettings(data_dir=tmp_path / "data", model_id=str(tiny_model_dir), memory_budget_gb=1.0,
                           load_in_4bit=False, auth="")
    return Engine(settings, device=choose_device(has_cuda=False, has_flash_attn=False))


@pytest.fixture(scope="session")
def embedded_engine():
    """The real engine on the embedded SmolLM2 (materialised once into the default data dir)."""
    from lab.engine import Engine
    from lab.settings import LabSettings
    return Engine(LabSettings(model_id="embedded", load_in_4bit=False, memory_budget_gb=8.0, auth=""))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(engine):
    """Launch the real app in-process on a free port; returns (demo, url)."""
    from app import build_app, launch
    demo = build_app(engine)
    launch(demo, engine, port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo, demo.local_url.rstrip("/")


@pytest.fixture(scope="session")
def live_app(embedded_engine):
    """The app over the embedded model, with the model already loaded, served on a free port."""
    embedded_engine.load()
    demo, url = launch_app(embedded_engine)
    yield url
    demo.close()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never Playwright's own browser download)."""
    pw_sync = pytest.importorskip("playwright.sync_api")
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is missing: run `make test`, which installs it, or apt-get install chromium")
    with pw_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-quic"])
        yield browser
        browser.close()


def _tiny_app(tmp_path_factory, auth: str = ""):
    import json
    from types import SimpleNamespace

    from lab.device import choose_device
    from lab.engine import Engine
    from lab.settings import LabSettings
    model_dir = save_tiny_model(tmp_path_factory.mktemp("tiny-app-model"))
    qa = tmp_path_factory.mktemp("tiny-app-qa") / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"what is the capital of france {n} ?", "answer": "paris"}) + "\n"
                          for n in "one two three four".split()))
    engine = Engine(LabSettings(data_dir=tmp_path_factory.mktemp("tiny-app-data"), model_id=str(model_dir),
                                memory_budget_gb=1.0, load_in_4bit=False, auth=auth),
                    device=choose_device(has_cuda=False, has_flash_attn=False))
    demo, url = launch_app(engine)
    return demo, SimpleNamespace(url=url, model_dir=model_dir, qa=qa, engine=engine)


@pytest.fixture(scope="session")
def tiny_app(tmp_path_factory):
    """The app over a tiny model (no embedded model needed), for fast browser tests of the UI:
    .url, .model_dir, .qa (a 4-line QA file) and .engine."""
    demo, app = _tiny_app(tmp_path_factory)
    yield app
    demo.close()


@pytest.fixture(scope="session")
def tiny_auth_app(tmp_path_factory):
    """Like tiny_app, with sign-in for the users alice/a1 and bob/b2."""
    demo, app = _tiny_app(tmp_path_factory, auth="alice:a1,bob:b2")
    yield app
    demo.close()


def tiny_job_yaml(model_dir, qa, output_name: str, max_steps: int = 4) -> str:
    """A job config that trains a LoRA on the tiny model in seconds."""
    return (f"kind: sft\nmodel_id: {model_dir}\ndatasets:\n- path: {qa}\n  format: qa\n"
            f"output_name: {output_name}\nmax_steps: {max_steps}\nper_device_train_batch_size: 2\n"
            "learning_rate: 0.01\nmax_length: 32\nlogging_steps: 1\nsave_steps: 100\nmode: lora\n"
            "lora_preset: minimal\nr: 2\nlora_alpha: 4\n")
