"""The from-scratch pretraining job config: architecture, tokenizer and corpus fields.

    python -m lab show-command assets/presets/pretrain_tiny.yaml
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.core.checks import MAX_TOKENS, check, check_whole
from lab.core.settings import EMBEDDED_MODEL
from lab.training.architecture import check_architecture
from lab.training.configs.base import TrainConfig

SCRATCH = "scratch"
TRAIN_TOKENIZER = "train"
TEXT_SUFFIXES = (".txt", ".md")
TOKENIZER_DIR = "tokenizer"  # in the job folder: the trained tokenizer, reused on resume
END_OF_TEXT, PAD = "<|endoftext|>", "<pad>"

POSITIONAL_ENCODINGS = {"rope": "Rotary position embeddings: queries and keys are rotated by an angle that grows with "
                                "the position, so attention sees relative distances (Llama, Arcee, StableLM and "
                                "Starcoder2 all use it; the lab makes StableLM rotate whole heads too)."}
UNAVAILABLE_POSITIONAL_ENCODINGS = {
    "learned absolute": "a trained vector per position (GPT-2): the mapped classes have no position embedding table",
    "alibi": "a distance penalty added to attention scores (BLOOM, MPT): none of the mapped classes implements it",
    "nope": "no positional signal at all: every mapped class applies RoPE unconditionally",
    "sinusoidal": "fixed sine/cosine vectors added to the input (the original Transformer): not in these classes",
}
"""Positional encodings the lab cannot offer with the transformers classes the architecture maps onto, and why."""


@dataclass
class PretrainConfig(TrainConfig):
    accepted_formats = ("text",)
    kind: str = "pretrain"
    """Pretraining from scratch: random weights learn next-token prediction on a text corpus."""
    model_id: str = SCRATCH
    """Must be 'scratch': pretraining builds the model from the architecture fields below, with random weights."""
    d_model: int = 128
    """Width of the residual stream (hidden size). Parameters grow with its square."""
    n_layers: int = 2
    """Transformer blocks stacked; each adds attention + MLP parameters."""
    n_heads: int = 4
    """Attention heads; d_model / n_heads is each head's width and must be even (RoPE rotates pairs)."""
    n_kv_heads: int = 2
    """Key/value heads: = n_heads is multi-head attention (MHA), 1 is multi-query (MQA), in between is grouped-query
    (GQA). Fewer KV heads = a smaller KV cache at inference, usually at a small quality cost."""
    d_ff: int = 344
    """Inner width of the MLP; about 8/3 x d_model for gated activations (swiglu), 4 x for plain ones."""
    activation: str = "swiglu"
    """MLP activation: gated swiglu, geglu, reglu (three matrices) or plain gelu, relu, silu, relu2 (two)."""
    norm: str = "rmsnorm"
    """rmsnorm (scale only, Llama style) or layernorm (scale and shift, subtracts the mean)."""
    positional_encoding: str = "rope"
    """How the model knows token order. Only 'rope' exists in the mapped transformers classes; see
    UNAVAILABLE_POSITIONAL_ENCODINGS for learned absolute, ALiBi, NoPE and sinusoidal."""
    rope_theta: float = 10000.0
    """RoPE base: larger values rotate more slowly, which suits longer contexts."""
    max_seq_len: int = 256
    """Longest context the model is built for (its RoPE table); max_length (the training block) must fit in it."""
    dropout: float = 0.0
    """Dropout on attention probabilities in every backend, and on the residual stream where the class has it
    (StableLM, Starcoder2; Llama and Arcee have none). Tiny corpora overfit, but 0 is usual for pretraining."""
    tied_embeddings: bool = True
    """Share one matrix between the input embeddings and the output head: saves vocab x d_model parameters."""
    tokenizer: str = TRAIN_TOKENIZER
    """'train' = a byte-level BPE trained on the corpus with tokenizer_vocab_size tokens; 'embedded' = the
    bundled SmolLM2's tokenizer (49,152 tokens); or a local folder with a tokenizer."""
    tokenizer_vocab_size: int = 2048
    """Vocabulary of the trained BPE (tokenizer 'train'), also the rows of the embedding table."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.kind == "pretrain", "kind", "must be 'pretrain' for a PretrainConfig", self.kind)
        check(self.mode == "full", "mode", "must be 'full' for pretrain (every weight starts random)", self.mode)
        check(self.model_id == SCRATCH, "model_id", f"must be '{SCRATCH}' for pretrain (the model is built from "
               "the architecture fields)", self.model_id)
        check(self.positional_encoding in POSITIONAL_ENCODINGS, "positional_encoding",
               "must be 'rope'; not available in the mapped transformers classes: "
               + "; ".join(f"{k} ({v})" for k, v in UNAVAILABLE_POSITIONAL_ENCODINGS.items()), self.positional_encoding)
        check(isinstance(self.tokenizer_vocab_size, int) and self.tokenizer_vocab_size >= 300,
               "tokenizer_vocab_size", "must be a whole number >= 300 (byte-level BPE starts from 256 byte symbols)",
               self.tokenizer_vocab_size)
        check(self.tokenizer in (TRAIN_TOKENIZER, EMBEDDED_MODEL) or Path(self.tokenizer).expanduser().is_dir(),
               "tokenizer", "must be 'train', 'embedded' or an existing local folder", self.tokenizer)
        # Raises naming d_model, n_heads, n_kv_heads, activation or norm when the shape cannot be built.
        check_architecture(self.d_model, self.n_layers, self.n_heads, self.n_kv_heads, self.d_ff,
                           self.tokenizer_vocab_size, self.activation, self.norm)
        check(self.rope_theta > 0, "rope_theta", "must be > 0", self.rope_theta)
        check_whole(self.max_seq_len, "max_seq_len", 8, MAX_TOKENS)
        check(self.max_length <= self.max_seq_len, "max_length",
               f"(the training block) must be <= max_seq_len ({self.max_seq_len})", self.max_length)
        check(0 <= self.dropout < 1, "dropout", "must be in [0, 1)", self.dropout)
        check(self.optim != "muon", "optim", "'muon' only updates matrices; pretraining also trains embeddings "
               "and norms", self.optim)
