"""Pretraining a small decoder-only model from random weights on a local text corpus.

    python -m lab train assets/presets/pretrain_tiny.yaml

The architecture fields map onto a transformers class through lab/training/architecture.py
(`architecture_config`): RMSNorm + gated MLP -> Llama, RMSNorm + plain MLP -> Arcee, LayerNorm +
gated MLP -> StableLM, LayerNorm + plain MLP -> Starcoder2. All four place positions with RoPE.
The corpus is tokenized, joined with an end-of-text token between documents, and cut into
blocks of max_length tokens (packing: no padding); the model learns to predict each next token
with transformers' Trainer. The tokenizer is a local folder or a byte-level BPE trained here.
`lab.explain.calculators.architecture.pretrain_preview` gives the parameter count and a memory
estimate before anything is launched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lab.core.checks import check
from lab.core.settings import EMBEDDED_MODEL
from lab.training.architecture import architecture_config
from lab.training.configs.pretrain import (
    END_OF_TEXT,
    PAD,
    TEXT_SUFFIXES,
    TOKENIZER_DIR,
    TRAIN_TOKENIZER,
    PretrainConfig,
)

if TYPE_CHECKING:
    from lab.training.jobs.callback import JobCallback


# ---- tokenizer ----------------------------------------------------------------------------------
def corpus_files(path: Path) -> list[Path]:
    """A .txt/.md file, or every .txt/.md file under a folder (sorted, so the order is reproducible)."""
    if path.is_file():
        check(path.suffix in TEXT_SUFFIXES, "datasets[].path", f"must be a {' or '.join(TEXT_SUFFIXES)} file or "
               "a folder of them", str(path))
        return [path]
    files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file()) if path.is_dir() else []
    check(bool(files), "datasets[].path", f"must be a {' or '.join(TEXT_SUFFIXES)} file or a folder holding some",
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
    from lab.inference.models import resolve_model_path
    from lab.training.kinds.common import load_tokenizer
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

    from lab.training.data.datasets import mix_rows
    sources = []
    for spec in cfg.datasets:
        blocks = pack_blocks(read_corpus(spec), tokenizer, cfg.max_length)
        check(bool(blocks), "max_length", f"is longer than the whole corpus {spec.path} in tokens", cfg.max_length)
        sources.append(([{"input_ids": b, "labels": b} for b in blocks], spec.weight))
    train = Dataset.from_list(mix_rows(sources, cfg.seed))
    if cfg.eval_dataset is not None:
        blocks = pack_blocks(read_corpus(cfg.eval_dataset), tokenizer, cfg.max_length)
        return train, Dataset.from_list([{"input_ids": b, "labels": b} for b in blocks])
    if cfg.eval_fraction > 0:
        check(len(train) >= 2, "eval_fraction", "needs at least 2 blocks of max_length tokens", cfg.eval_fraction)
        split = train.train_test_split(test_size=cfg.eval_fraction, seed=cfg.seed)
        return split["train"], split["test"]
    return train, None


# ---- the run ------------------------------------------------------------------------------------
def run_pretrain(cfg: PretrainConfig, job_dir: Path, callback: JobCallback) -> Path | None:
    """Train; returns the output folder (model + tokenizer), or None when stopped before the end."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from lab.core.device import detect_device
    from lab.training.jobs.files import data_dir_of, is_main_process
    from lab.training.jobs.status import update_status
    from lab.training.kinds.common import count_parameters, train_and_save, training_arguments
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
