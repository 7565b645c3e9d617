"""Parameter counts of a decoder-only architecture: built by transformers on the meta device and by hand.

    python -c "from lab.explain.calculators.architecture import architecture_params as p; print(p(128, 2, 4, 2, 344, 2048))"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.core.settings import LabSettings
from lab.explain.calculators.memory import format_bytes, memory_estimate
from lab.training.architecture import GATED_ACTIVATIONS, architecture_config
from lab.training.configs.pretrain import TRAIN_TOKENIZER, UNAVAILABLE_POSITIONAL_ENCODINGS, PretrainConfig
from lab.training.kinds.pretrain import load_pretrain_tokenizer


@dataclass(frozen=True)
class ArchitectureParams:
    instantiated: int
    """Parameters of the model transformers builds from the config (meta device, tied weights once)."""
    analytic: int
    """The same count from the formula in `architecture_formula`."""
    parts: dict[str, int]
    """The formula's terms: embeddings, attention, mlp, norms, lm_head."""
    backend: str
    """The transformers config class that implements this combination of norm and MLP."""


def architecture_formula(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, vocab_size: int,
                         tied_embeddings: bool, gated: bool, norm: str, attention_bias: bool) -> dict[str, int]:
    """Parameter count by hand, term by term (head_dim = d_model / n_heads, kv = n_kv_heads * head_dim).

    embeddings  V*d
    attention   L * (d*d [q] + 2*d*kv [k, v] + d*d [o] + biases)
    mlp         L * (3 if gated else 2) * d*d_ff
    norms       (2L + 1) * d for RMSNorm (scale only), twice that for LayerNorm (scale and shift)
    lm_head     V*d unless tied to the embeddings

    attention_bias adds, per layer: q, k, v and o biases (Llama, Arcee); q, k, v only (StableLM);
    q, k, v, o and both MLP biases (Starcoder2, whose switch covers every linear layer).
    """
    kv = n_kv_heads * (d_model // n_heads)
    qkvo_bias = 2 * d_model + 2 * kv
    if not attention_bias:
        bias = 0
    elif norm == "rmsnorm":  # Llama, Arcee
        bias = qkvo_bias
    elif gated:  # StableLM: q, k, v only
        bias = qkvo_bias - d_model
    else:  # Starcoder2: every linear layer, the MLP's two included
        bias = qkvo_bias + d_ff + d_model
    norm_size = d_model if norm == "rmsnorm" else 2 * d_model
    return {"embeddings": vocab_size * d_model,
            "attention": n_layers * (2 * d_model * d_model + 2 * d_model * kv + bias),
            "mlp": n_layers * (3 if gated else 2) * d_model * d_ff,
            "norms": (2 * n_layers + 1) * norm_size,
            "lm_head": 0 if tied_embeddings else vocab_size * d_model}


def architecture_params(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, vocab_size: int,
                        tied_embeddings: bool = False, activation: str = "swiglu", norm: str = "rmsnorm",
                        attention_bias: bool = False) -> ArchitectureParams:
    """Parameter count of a decoder-only architecture, by building it in transformers on the meta device."""
    config = architecture_config(d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab_size, tied_embeddings,
                                 activation, norm, attention_bias)
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    parts = architecture_formula(d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab_size, tied_embeddings,
                                 activation in GATED_ACTIVATIONS, norm, attention_bias)
    return ArchitectureParams(instantiated=sum(p.numel() for p in model.parameters()), analytic=sum(parts.values()),
                              parts=parts, backend=type(config).__name__)


def pretrain_preview(cfg: PretrainConfig, data_dir: Path | None = None) -> dict[str, Any]:
    """What the Train tab shows before launch: backend class, parameters (total and by part), memory estimate.

    Nothing is trained and no corpus is read: a trained tokenizer counts tokenizer_vocab_size rows.
    """
    if cfg.tokenizer == TRAIN_TOKENIZER:
        vocab = cfg.tokenizer_vocab_size
    else:
        vocab = len(load_pretrain_tokenizer(cfg, data_dir or LabSettings().data_dir))
    params = architecture_params(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff, vocab,
                                 cfg.tied_embeddings, cfg.activation, cfg.norm)
    memory = memory_estimate(params.instantiated, params.instantiated, 32, cfg.optim, cfg.per_device_train_batch_size,
                             cfg.max_length, cfg.d_model, cfg.n_layers, cfg.gradient_checkpointing, d_ff=cfg.d_ff,
                             n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, vocab_size=vocab,
                             gated_mlp=cfg.activation in GATED_ACTIVATIONS)
    attention = ("MHA" if cfg.n_kv_heads == cfg.n_heads else "MQA" if cfg.n_kv_heads == 1 else "GQA")
    return {"backend": params.backend, "params": params.instantiated, "params_by_part": params.parts,
            "vocab_size": vocab, "attention": attention, "head_dim": cfg.d_model // cfg.n_heads,
            "positional_encoding": cfg.positional_encoding,
            "unavailable_positional_encodings": UNAVAILABLE_POSITIONAL_ENCODINGS,
            "tokens_per_step": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.max_length,
            "memory_bytes": {"weights": memory.weights, "gradients": memory.gradients,
                             "optimizer_state": memory.optimizer_state, "activations": memory.activations,
                             "total": memory.total},
            "memory_total": format_bytes(memory.total)}
