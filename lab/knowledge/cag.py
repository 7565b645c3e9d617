"""Cache-augmented generation: prefill a document into a KV cache once, answer many questions from it.

    python -m lab bench cag --json

The knowledge prefix of the question prompt (lab.knowledge.prompt: system turn, document, instruction)
runs through the model once into a transformers `DynamicCache`. Each question then prefills only
its own few tokens on top of the cache, decodes, and the cache is cropped back to the knowledge
length (transformers 5.23's `crop` takes a negative count of tokens to remove).

The cache is saved under `<data>/knowledge/<doc.sha256[:16]>/cag/<key>/` (per-layer keys and values
in `kv.safetensors`, plus `meta.json`), keyed by document + model + quantization + dtype + prompt
version, and reloaded instead of prefilling again. In memory it is held by the session manager
as a `kv_cache` entry belonging to its model, so it is counted against the budget and evictable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, PreTrainedModel

from lab.core.files import publish_dir
from lab.inference.generate import GenerationEvent, GenerationSettings, stream_generate
from lab.inference.models import LoadedModel, ModelSpec
from lab.inference.session import SessionManager
from lab.knowledge.configs import CagConfig
from lab.knowledge.disk import enforce_cap
from lab.knowledge.documents import Document
from lab.knowledge.prompt import PROMPT_VERSION, Shots, split_prompt

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Bump when the files written by `save_cache` change, so old caches are rebuilt."""


@dataclass
class CagCache:
    """A document prefilled for one model, ready to answer questions."""

    cache: DynamicCache
    """Per layer: keys and values [1, kv_heads, kv_len, head_dim] in the model's compute dtype."""
    prefix_ids: torch.Tensor
    """[1, kv_len] the token ids the cache holds (the knowledge prefix of the question prompt)."""
    kv_len: int
    """Tokens in the knowledge prefix; the cache is cropped back to this after every question."""
    key: str
    """Hash of document + model + quantization + dtype + prompt version; the folder name on disk."""
    path: Path
    """Folder holding kv.safetensors and meta.json."""
    entry_key: str
    """Key of the session-manager entry that holds this cache."""
    reused: bool
    """True when loaded from disk, False when prefilled by this process."""
    build_s: float
    """Seconds to prefill and save (built) or to read from disk (reused)."""
    nbytes: int
    """Bytes of the key and value tensors."""
    last_crop_ms: float = 0.0
    """Milliseconds the crop after the latest question took."""

    @property
    def size_mb(self) -> float:
        return self.nbytes / 2**20


def cache_key(doc: Document, spec: ModelSpec, dtype: torch.dtype, chat_template: str | None, shots: Shots = ()) -> str:
    """Short hash of everything that changes the cached tensors (the few-shot turns are part of the prefix)."""
    settings = {"format": CACHE_FORMAT, "doc_sha256": doc.sha256, "model": spec.key, "dtype": str(dtype),
                "prompt_version": PROMPT_VERSION,
                "chat_template": hashlib.sha256((chat_template or "").encode()).hexdigest(),
                "shots": [list(pair) for pair in shots]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def check_fits(knowledge_tokens: int, window: int, reserve: int, model_id: str) -> None:
    """Refuse a document whose prompt leaves less than `reserve` tokens of the model's window."""
    if knowledge_tokens + reserve > window:
        raise ValueError(
            f"The document is too long for CAG and full-context prompting on {model_id}: its prompt needs "
            f"{knowledge_tokens:,} tokens plus {reserve:,} for the question and answer = "
            f"{knowledge_tokens + reserve:,}, but the model's window holds {window:,} tokens "
            f"(available for the document: {max(0, window - reserve):,}). Use RAG, which puts only the "
            "relevant chunks in the prompt, or a shorter document.")


def cache_nbytes(cache: DynamicCache) -> int:
    return sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
               for layer in cache.layers)


def crop_to(cache: DynamicCache, kv_len: int) -> float:
    """Drop everything after the first `kv_len` tokens; returns the milliseconds it took."""
    start = time.perf_counter()
    extra = cache.get_seq_length() - kv_len
    if extra:
        cache.crop(-extra)  # transformers 5.23: a negative count removes that many tokens from the end
    return (time.perf_counter() - start) * 1000


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def prefill(model: PreTrainedModel, prefix_ids: torch.Tensor) -> DynamicCache:
    """Run the knowledge prefix through the model once and return the filled cache."""
    cache = DynamicCache(config=model.config)
    if not cache.is_croppable:
        raise ValueError("CAG needs a model whose KV cache can be cropped back (full attention); this model has "
                         "sliding-window or linear-attention layers. Use RAG or full context with it.")
    with torch.no_grad():
        # Only the cache is wanted; logits_to_keep=1 skips a [K, vocab] logits tensor (840 MB for 4k tokens).
        model(input_ids=prefix_ids.to(_device(model)), past_key_values=cache, use_cache=True, logits_to_keep=1)
    return cache


def save_cache(cache: DynamicCache, prefix_ids: torch.Tensor, path: Path, meta: dict) -> None:
    """Write the cache atomically: a temp folder renamed into place, so a crash never leaves half a cache."""
    tensors = {"prefix_ids": prefix_ids.cpu().contiguous()}
    for i, layer in enumerate(cache.layers):
        tensors[f"layers.{i}.keys"] = layer.keys.detach().cpu().contiguous()
        tensors[f"layers.{i}.values"] = layer.values.detach().cpu().contiguous()
    with publish_dir(path) as tmp:  # a cache saved concurrently from the same inputs is kept instead
        save_file(tensors, str(tmp / "kv.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_cache(path: Path, model: PreTrainedModel) -> tuple[DynamicCache, torch.Tensor]:
    """Rebuild a DynamicCache from saved tensors, on the model's device.

    `DynamicCache(ddp_cache_data=[(keys, values), ...], config=...)` creates one layer per entry of
    the config's layer types and fills it through `layer.update(keys, values)`, exactly as a
    forward pass would have.
    """
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    tensors = load_file(str(path / "kv.safetensors"), device=str(_device(model)))
    layers = [(tensors[f"layers.{i}.keys"], tensors[f"layers.{i}.values"]) for i in range(meta["n_layers"])]
    return DynamicCache(ddp_cache_data=layers, config=model.config), tensors["prefix_ids"].cpu()


def get_cag(sessions: SessionManager, spec: ModelSpec, loaded: LoadedModel, doc: Document, root: Path,
            cfg: CagConfig | None = None, shots: Shots = ()) -> CagCache:
    """The document's CAG cache for this model: held in memory, else loaded from disk, else prefilled.

    `shots` are few-shot turns prefilled after the document (lab.knowledge.prompt.demonstrations).
    Call it with the model in use (inside `sessions.use(spec)` and the GPU slot): it runs the model.
    """
    cfg = cfg or CagConfig()
    model, tokenizer = loaded.model, loaded.tokenizer
    # The cache holds activations in the compute dtype (for a 4-bit model too: its weights are
    # de-quantized to it per matmul), and spec.key already tells 4-bit from full weights.
    dtype = model.dtype
    key = cache_key(doc, spec, dtype, tokenizer.chat_template, shots)
    entry_key = f"{spec.key}#cag:{key}"
    held = sessions.get(entry_key)
    if held is not None:
        return held
    prefix_ids = split_prompt(tokenizer, "?", doc.text, shots).prefix_ids  # [1, K]; the question is not part of it
    check_fits(prefix_ids.shape[1], loaded.context_window, cfg.reserve_tokens, spec.model_id)
    path = Path(root) / doc.sha256[:16] / "cag" / key
    start = time.perf_counter()
    cache = None
    if (path / "meta.json").exists():
        cache, saved_ids = load_cache(path, model)
        if not torch.equal(saved_ids, prefix_ids):
            # Same model id, different tokenizer (a local folder edited in place): the cache is stale.
            log.warning("CAG cache %s was built from other tokens; rebuilding it", path)
            shutil.rmtree(path, ignore_errors=True)
            cache = None
    reused = cache is not None
    if cache is None:
        cache = prefill(model, prefix_ids)
        meta = {"format": CACHE_FORMAT, "key": key, "document": doc.name, "doc_sha256": doc.sha256,
                "model": spec.model_id, "model_key": spec.key, "dtype": str(dtype), "prompt_version": PROMPT_VERSION,
                "kv_len": prefix_ids.shape[1], "shots": len(shots), "n_layers": len(cache.layers),
                "prefill_s": round(time.perf_counter() - start, 3), "transformers": transformers.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        save_cache(cache, prefix_ids, path, meta)
    enforce_cap(root, keep=path)  # marks this cache used; the least recently used go past LAB_KNOWLEDGE_CACHE_GB
    cag = CagCache(cache=cache, prefix_ids=prefix_ids, kv_len=prefix_ids.shape[1], key=key, path=path,
                   entry_key=entry_key, reused=reused, build_s=time.perf_counter() - start, nbytes=cache_nbytes(cache))
    sessions.put(entry_key, "kv_cache", cag, cag.nbytes, f"CAG cache of {doc.name} ({cag.kv_len} tokens)",
                 parent=spec.key)
    return cag


def stream_answer(cag: CagCache, loaded: LoadedModel, question_ids: torch.Tensor,
                  settings: GenerationSettings) -> Iterator[GenerationEvent]:
    """Stream an answer on top of the cache, then crop it back to the knowledge length.

    `question_ids` [1, S] is only the per-question suffix. The crop runs in `finally`, so a
    consumer that stops early (closing this generator) still leaves the cache clean.
    """
    if cag.cache.get_seq_length() != cag.kv_len:
        raise RuntimeError(f"CAG cache holds {cag.cache.get_seq_length()} tokens, expected {cag.kv_len}")
    if cag.kv_len + question_ids.shape[1] + settings.max_new_tokens > loaded.context_window:
        raise ValueError(f"The question and answer do not fit beside the document: {cag.kv_len} + "
                         f"{question_ids.shape[1]} + max_new_tokens {settings.max_new_tokens} > the window of "
                         f"{loaded.context_window}; ask a shorter question or for fewer tokens.")
    try:
        yield from stream_generate(loaded.model, loaded.tokenizer, question_ids, settings, past_key_values=cag.cache)
    finally:
        cag.last_crop_ms = crop_to(cag.cache, cag.kv_len)
