"""Builders the tests share: a tiny random Llama with a word-level tokenizer, the app launched in-process,
a job config that trains in seconds. Fixtures that use them live in conftest.py."""

from __future__ import annotations

from pathlib import Path

import torch

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


def save_loud_adapter(model_dir: Path, path: Path) -> Path:
    """A LoRA adapter on the tiny model whose B matrices are large, so its answers differ from the base's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=2.0)
    model.save_pretrained(path)
    return path


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


def tiny_job_yaml(model_dir, qa, output_name: str, max_steps: int = 4) -> str:
    """A job config that trains a LoRA on the tiny model in seconds."""
    return (f"kind: sft\nmodel_id: {model_dir}\ndatasets:\n- path: {qa}\n  format: qa\n"
            f"output_name: {output_name}\nmax_steps: {max_steps}\nper_device_train_batch_size: 2\n"
            "learning_rate: 0.01\nmax_length: 32\nlogging_steps: 1\nsave_steps: 100\nmode: lora\n"
            "lora_preset: minimal\nr: 2\nlora_alpha: 4\n")


def make_engine(data_dir, model_dir, **settings):
    """An engine with sign-in for alice, bob and carol (admin, LAB_ADMINS) over a tiny model; jobs stay queued."""
    from lab.core.device import choose_device
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    engine = Engine(LabSettings(**(dict(data_dir=data_dir, model_id=str(model_dir), memory_budget_gb=1.0,
                                        load_in_4bit=False, auth="alice:a1,bob:b2,carol:c3", admins="carol")
                                   | settings)),
                    device=choose_device(has_cuda=False, has_flash_attn=False))
    engine.jobs.runner.max_running = 0  # jobs that get through stay queued: nothing here trains
    return engine


def upload(engine, user: str, name: str, text: str, tmp_path: Path) -> Path:
    """Save `text` as `user`'s upload `name` through the Engine; the path it is kept at."""
    source = tmp_path / "incoming" / user / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(text)
    engine.uploads.save(user, source)
    return engine.settings.data_dir / "users" / user / "uploads" / name


def app_thread_stacks(markers: tuple[str, ...] = ("/lab/", "/tabs/")) -> str:
    """Where every thread of this process (the in-process app included) stands, keeping the frames in the lab's
    own code: printed when a browser test times out, so a hang on a loaded machine can be read afterwards."""
    import sys
    import threading
    import traceback
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        frames = [f for f in traceback.extract_stack(frame) if any(m in f.filename for m in markers)]
        if frames:
            out.append(f"--- {names.get(ident, ident)}\n" + "".join(traceback.format_list(frames[-6:])))
    return "\n".join(out) or "(no thread is in the lab's code)"


def wait_until(condition, what: str = "condition", timeout_s: float = 60.0) -> None:
    """Poll until `condition()` holds (a thread reached a known point). A guard against a hang, not a timing
    check: it raises TimeoutError naming `what` only when the point is never reached."""
    import time
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"never: {what}")
        time.sleep(0.01)


def write_qa_file(path: Path, count: int) -> Path:
    """A QA JSONL of `count` capital-of-France pairs (one numbered word each), the tiny jobs' training data."""
    import json
    words = "one two three four five six seven eight nine ten".split()[:count]
    path.write_text("".join(json.dumps({"question": f"what is the capital of france {n} ?",
                                        "answer": f"paris is the capital {n} ."}) + "\n" for n in words))
    return path
