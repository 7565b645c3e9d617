"""Decoder-only architectures from a few numbers: which transformers config class implements them.

    python -c "from lab.training.architecture import architecture_config; print(architecture_config(128, 2, 4, 2, 344, 2048))"

Pretraining builds its model from these configs; the Explain tab counts their parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.core.checks import check

if TYPE_CHECKING:  # the checks need no transformers; a PretrainConfig validates with them alone
    from transformers import PretrainedConfig

GATED_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu_pytorch_tanh", "reglu": "relu"}
"""Gated MLPs (down(act(gate(x)) * up(x))): three matrices of d_model x d_ff."""
PLAIN_ACTIVATIONS = {"gelu": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu", "relu2": "relu2"}
"""Plain MLPs (down(act(up(x)))): two matrices of d_model x d_ff."""


def _backend_config(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, vocab_size: int,
                    tied: bool, activation: str, norm: str, attention_bias: bool) -> PretrainedConfig:
    """All four backends use RoPE (no position parameters) and the same q/k/v/o attention layout.

    rmsnorm + gated -> Llama; rmsnorm + plain -> Arcee; layernorm + gated -> StableLM;
    layernorm + plain -> Starcoder2. Their bias switches differ, see `architecture_formula`.
    """
    from transformers import ArceeConfig, LlamaConfig, StableLmConfig, Starcoder2Config

    gated = activation in GATED_ACTIVATIONS
    act = GATED_ACTIVATIONS[activation] if gated else PLAIN_ACTIVATIONS[activation]
    common = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_ff, num_hidden_layers=n_layers,
                  num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, tie_word_embeddings=tied,
                  hidden_act=act, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if norm == "rmsnorm":
        cls = LlamaConfig if gated else ArceeConfig
        return cls(**common, attention_bias=attention_bias, mlp_bias=False)
    if gated:
        return StableLmConfig(**common, use_qkv_bias=attention_bias)
    return Starcoder2Config(**common, use_bias=attention_bias)


def architecture_config(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, vocab_size: int,
                        tied_embeddings: bool = False, activation: str = "swiglu", norm: str = "rmsnorm",
                        attention_bias: bool = False) -> PretrainedConfig:
    """The transformers config of a decoder-only architecture (validated; a bad value names its field).

    n_kv_heads = n_heads is multi-head attention, 1 is multi-query, anything between is grouped-query.
    """
    check_architecture(d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab_size, activation, norm)
    return _backend_config(d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab_size, tied_embeddings,
                           activation, norm, attention_bias)


def check_architecture(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, vocab_size: int,
                       activation: str = "swiglu", norm: str = "rmsnorm") -> None:
    """A ValueError naming d_model, n_heads, n_kv_heads, activation or norm when no backend can build the shape."""
    for name, value in (("d_model", d_model), ("n_layers", n_layers), ("n_heads", n_heads),
                        ("n_kv_heads", n_kv_heads), ("d_ff", d_ff), ("vocab_size", vocab_size)):
        check(isinstance(value, int) and value >= 1, name, "must be a whole number >= 1", value)
    check(d_model % n_heads == 0, "d_model", f"must be divisible by n_heads={n_heads}", d_model)
    check((d_model // n_heads) % 2 == 0, "d_model", "/ n_heads must be even (RoPE rotates pairs of dimensions)",
           d_model)
    check(n_heads % n_kv_heads == 0, "n_heads", f"must be divisible by n_kv_heads={n_kv_heads}", n_heads)
    check(activation in GATED_ACTIVATIONS or activation in PLAIN_ACTIVATIONS, "activation",
           f"must be one of {', '.join([*GATED_ACTIVATIONS, *PLAIN_ACTIVATIONS])}", activation)
    check(norm in ("rmsnorm", "layernorm"), "norm", "must be rmsnorm or layernorm", norm)
