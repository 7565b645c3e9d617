"""What a job's training data weighs in tokens, and how many rows TRL's packing turns it into.

    python -c "from lab.explain.sweeps.tokens import token_profile; from lab.training.configs import load_config; \
print(token_profile(load_config('assets/presets/sft_lora_qa.yaml'), 'data/models'))"

A sweep that compares packing on and off, or several batch sizes, must give every point the same
amount of data, or the point that sees more wins for that reason alone. The numbers come from the
same pieces the SFT job uses: the lab's rows (lab.training.data), the model's tokenizer and chat
template, truncation at max_length, and TRL's own `pack_dataset` with its default best-fit
decreasing strategy, so the packed row count is the one training will see.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from lab.training.configs.base import DatasetSpec, TrainConfig


@dataclass(frozen=True)
class TokenProfile:
    rows: int
    """Training rows (examples) after the mixture and any held-out split."""
    tokens: int
    """Their tokens after the chat template and truncation at max_length: what one epoch trains on."""
    packed_rows: int
    """Rows of max_length tokens TRL's best-fit decreasing packing makes of them."""

    @property
    def tokens_per_row(self) -> float:
        return self.tokens / self.rows

    @property
    def examples_per_packed_row(self) -> float:
        return self.rows / self.packed_rows


@cache
def _profile(source: str, data_json: str) -> TokenProfile:
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    from lab.training.data.datasets import load_train_eval
    from lab.training.kinds.common import load_tokenizer

    data = json.loads(data_json)
    evals = DatasetSpec(**data["eval_dataset"]) if data["eval_dataset"] else None
    train, _ = load_train_eval([DatasetSpec(**d) for d in data["datasets"]], evals, data["eval_fraction"],
                               data["seed"])
    max_length = data["max_length"]
    tokenizer = load_tokenizer(source)
    lengths = []
    for row in train:
        if "prompt" in row and "completion" in row:
            ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:  # plain text rows (pretraining)
            ids = tokenizer(row["text"])["input_ids"]
        lengths.append(min(len(ids), max_length))
    ids = [[1] * n for n in lengths]  # pack_dataset only reads the lengths
    packed = pack_dataset(Dataset.from_dict({"input_ids": ids}), max_length, strategy="bfd")
    return TokenProfile(rows=len(lengths), tokens=sum(lengths), packed_rows=len(packed))


def token_profile(cfg: TrainConfig, models_dir: str | Path) -> TokenProfile:
    """Rows, tokens and packed rows of a job's training data (cached per model, data and length settings)."""
    from lab.inference.models import resolve_model_path

    source = resolve_model_path(cfg.model_id, Path(models_dir))
    data = asdict(cfg)
    key = {k: data[k] for k in ("datasets", "eval_dataset", "eval_fraction", "seed", "max_length")}
    return _profile(source, json.dumps(key, sort_keys=True))
