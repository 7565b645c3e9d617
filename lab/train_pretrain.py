"""Pretraining a small decoder-only model from random weights on a local text corpus.

    python -m lab train assets/presets/pretrain_tiny.yaml
    python -c "from lab.train_config import load_config; from lab.train_pretrain import pretrain_preview; \
print(pretrain_preview(load_config('assets/presets/pretrain_tiny.yaml')))"

The architecture fields map onto a transformers class through lab/calculators.py
(`architecture_config`): RMSNorm + gated MLP -> Llama, RMSNorm + plain MLP -> Arcee, LayerNorm +
gated MLP -> StableLM, LayerNorm + plain MLP -> Starcoder2. All four place positions with RoPE.
The corpus is tokenized, joined with an end-of-text token between documents, and cut into
blocks of max_length tokens (packing: no padding); the model learns to predict each next token
with transformers' Trainer. The tokenizer is a local folder or a byte-level BPE trained here.
`pretrain_preview` gives the parameter count and a memory estimate before anything is launched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.calculators import (GATED_ACTIVATIONS, architecture_config, architecture_params, format_bytes,
                             memory_estimate)
from lab.settings import EMBEDDED_MODEL
from lab.train_config import TrainConfig, _check

if TYPE_CHECKING:
    from lab.train_common import JobCallback

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
        _check(self.kind == "pretrain", "kind", "must be 'pretrain' for a PretrainConfig", self.kind)
        _check(self.model_id == SCRATCH, "model_id", f"must be '{SCRATCH}' for pretrain (the model is built from "
               "the architecture fields)", self.model_id)
        _check(self.positional_encoding in POSITIONAL_ENCODINGS, "positional_encoding",
               "must be 'rope'; not available in the mapped transformers classes: "
               + "; ".join(f"{k} ({v})" for k, v in UNAVAILABLE_POSITIONAL_ENCODINGS.items()), self.positional_encoding)
        _check(isinstance(self.tokenizer_vocab_size, int) and self.tokenizer_vocab_size >= 300,
               "tokenizer_vocab_size", "must be a whole number >= 300 (byte-level BPE starts from 256 byte symbols)",
               self.tokenizer_vocab_size)
        _check(self.tokenizer in (TRAIN_TOKENIZER, EMBEDDED_MODEL) or Path(self.tokenizer).expanduser().is_dir(),
               "tokenizer", "must be 'train', 'embedded' or an existing local folder", self.tokenizer)
        # Raises naming d_model, n_heads, n_kv_heads, activation or norm when the shape cannot be built.
        architecture_config(self.d_model, self.n_layers, self.n_heads, self.n_kv_heads, self.d_ff,
                            self.tokenizer_vocab_size, self.tied_embeddings, self.activation, self.norm)
        _check(self.rope_theta > 0, "rope_theta", "must be > 0", self.rope_theta)
        _check(isinstance(self.max_seq_len, int) and self.max_seq_len >= 8, "max_seq_len",
               "must be a whole number >= 8", self.max_seq_len)
        _check(self.max_length <= self.max_seq_len, "max_length",
               f"(the training block) must be <= max_seq_len ({self.max_seq_len})", self.max_length)
        _check(0 <= self.dropout < 1, "dropout", "must be in [0, 1)", self.dropout)
        _check(self.optim != "muon", "optim", "'muon' only updates matrices; pretraining also trains embeddings "
               "and norms", self.optim)


# ---- tokenizer ----------------------------------------------------------------------------------
def corpus_files(path: Path) -> list[Path]:
    """A .txt/.md file, or every .txt/.md file under a folder (sorted, so the order is reproducible)."""
    if path.is_file():
        _check(path.suffix in TEXT_SUFFIXES, "datasets[].path", f"must be a {' or '.join(TEXT_SUFFIXES)} file or "
               "a folder of them", str(path))
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file()) if path.is_dir() else []
    _check(bool(files), "datasets[].path", f"must be a {' or '.join(TEXT_SUFFIXES)} file or a folder holding some",
           str(path))
    return files


def read_corpus(spec) -> list[str]:
    """The documents of one corpus entry, one string per file."""
    return [f.read_text(encoding="utf-8", errors="replace") for f in corpus_files(spec.resolved)]


def train_bpe_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (every byte is a symbol, so no text is ever unknown) trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   pad_token=PAD)


def load_pretrain_tokenizer(cfg: PretrainConfig, data_dir: Path, job_dir: Path | None = None):
    """The tokenizer the run uses: trained on the corpus (once per job, then reused), or loaded from a folder."""
    from lab.models import resolve_model_path
    from lab.train_common import load_tokenizer
    if cfg.tokenizer == EMBEDDED_MODEL:
        return load_tokenizer(resolve_model_path(EMBEDDED_MODEL, Path(data_dir) / "models"))
    if cfg.tokenizer != TRAIN_TOKENIZER:
        return load_tokenizer(str(Path(cfg.tokenizer).expanduser()))
    saved = Path(job_dir) / TOKENIZER_DIR if job_dir else None
    if saved is not None and saved.is_dir():
        return load_tokenizer(str(saved))
    texts = [text for spec in cfg.datasets for text in read_corpus(spec)]
    tokenizer = train_bpe_tokenizer(texts, cfg.tokenizer_vocab_size)
    if saved is not None:
        tokenizer.save_pretrained(saved)
    return tokenizer


def model_vocab_size(cfg: PretrainConfig, tokenizer) -> int:
    """Rows of the embedding table: tokenizer_vocab_size for a trained BPE (a small corpus may fill fewer), else
    the tokenizer's size."""
    return cfg.tokenizer_vocab_size if cfg.tokenizer == TRAIN_TOKENIZER else len(tokenizer)


# ---- model --------------------------------------------------------------------------------------
def model_config(cfg: PretrainConfig, vocab_size: int, tokenizer=None):
    """The transformers config: the calculators' mapping plus context length, RoPE base, dropout, token ids."""
    config = architecture_config(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff, vocab_size,
                                 cfg.tied_embeddings, cfg.activation, cfg.norm)
    config.max_position_embeddings = cfg.max_seq_len
    config.rope_parameters["rope_theta"] = cfg.rope_theta
    if "partial_rotary_factor" in config.rope_parameters:  # StableLM rotates a quarter of each head by default
        config.rope_parameters["partial_rotary_factor"] = 1.0
    config.attention_dropout = cfg.dropout
    for name in ("hidden_dropout", "residual_dropout", "embedding_dropout"):  # StableLM / Starcoder2
        if hasattr(config, name):
            setattr(config, name, cfg.dropout)
    if tokenizer is not None:
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    return config


def pretrain_preview(cfg: PretrainConfig, data_dir: Path | None = None) -> dict[str, Any]:
    """What the Train tab shows before launch: backend class, parameters (total and by part), memory estimate.

    Nothing is trained and no corpus is read: a trained tokenizer counts tokenizer_vocab_size rows.
    """
    from lab.settings import LabSettings
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


# ---- data ---------------------------------------------------------------------------------------
def pack_blocks(texts: list[str], tokenizer, block: int) -> list[list[int]]:
    """Token ids of all texts, an end-of-text token after each, cut into blocks of `block` (the rest dropped)."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return [ids[i:i + block] for i in range(0, len(ids) - block + 1, block)]


def block_datasets(cfg: PretrainConfig, tokenizer):
    """(train, eval or None) Datasets of packed blocks; input_ids double as labels (the model shifts them)."""
    from datasets import Dataset

    from lab.datasets_io import mix_rows
    sources = []
    for spec in cfg.datasets:
        blocks = pack_blocks(read_corpus(spec), tokenizer, cfg.max_length)
        _check(bool(blocks), "max_length", f"is longer than the whole corpus {spec.path} in tokens", cfg.max_length)
        sources.append(([{"input_ids": b, "labels": b} for b in blocks], spec.weight))
    train = Dataset.from_list(mix_rows(sources, cfg.seed))
    if cfg.eval_dataset is not None:
        blocks = pack_blocks(read_corpus(cfg.eval_dataset), tokenizer, cfg.max_length)
        return train, Dataset.from_list([{"input_ids": b, "labels": b} for b in blocks])
    if cfg.eval_fraction > 0:
        _check(len(train) >= 2, "eval_fraction", "needs at least 2 blocks of max_length tokens", cfg.eval_fraction)
        split = train.train_test_split(test_size=cfg.eval_fraction, seed=cfg.seed)
        return split["train"], split["test"]
    return train, None


# ---- the run ------------------------------------------------------------------------------------
def run_pretrain(cfg: PretrainConfig, job_dir: Path, callback: JobCallback) -> Path | None:
    """Train; returns the output folder (model + tokenizer), or None when stopped before the end."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from lab.device import detect_device
    from lab.train_common import (train_and_save, count_parameters, data_dir_of, is_main_process, training_arguments,
                                  update_status)
    device = detect_device()
    tokenizer = load_pretrain_tokenizer(cfg, data_dir_of(job_dir), job_dir)
    train_data, eval_data = block_datasets(cfg, tokenizer)
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(model_config(cfg, model_vocab_size(cfg, tokenizer), tokenizer),
                                             attn_implementation=device.attn_implementation)
    if is_main_process():
        update_status(job_dir, train_rows=len(train_data), eval_rows=len(eval_data) if eval_data else 0,
                      backend=type(model.config).__name__, **count_parameters(model))
    trainer = Trainer(model=model, args=TrainingArguments(**training_arguments(cfg, job_dir, device)),
                      train_dataset=train_data, eval_dataset=eval_data, processing_class=tokenizer,
                      callbacks=[callback])
    return train_and_save(trainer, job_dir, callback)
