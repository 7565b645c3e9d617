"""Direct preference optimisation (full, LoRA, QLoRA) with TRL's DPOTrainer.

    python -m lab train assets/presets/dpo_lora_qa.yaml

Each row pairs a prompt with a chosen and a rejected answer. DPO raises the policy's
log-probability of the chosen answer relative to a frozen reference model and lowers it for the
rejected one; beta sets how far the policy may move from the reference. With LoRA the reference
is the same model with its adapters switched off (TRL gets a `peft_config` and wraps the model
itself), so no second copy is loaded; full fine-tuning loads a second frozen copy.

lab/train_config.py imports this module for DpoConfig, and the web app and the job runner read
configs without training, so TRL and the data code are imported inside the functions that train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.train_config import AdapterConfig, _check

if TYPE_CHECKING:
    from lab.train_common import JobCallback

DPO_LOSSES: dict[str, str] = {
    "sigmoid": "The original DPO loss: -log sigmoid(beta x (chosen margin - rejected margin)).",
    "ipo": "IPO: a squared loss that pulls the margin towards 1/(2 beta) instead of pushing it without bound; "
           "less prone to overfitting on small preference sets.",
    "hinge": "SLiC hinge loss: no penalty once the margin exceeds 1/beta.",
    "robust": "Robust DPO: assumes a share label_smoothing of the pairs are flipped (here always 0 = sigmoid).",
    "sigmoid_norm": "Sigmoid loss on length-normalised log-probabilities: long answers gain nothing from length.",
    "apo_zero": "Anchored preference optimisation: raises chosen and lowers rejected likelihood in absolute terms "
                "(for pairs where chosen is better than what the model says now).",
    "nca_pair": "NCA: scores each answer on its own rather than only their difference, so chosen likelihood "
                "does not sink along with rejected.",
}
"""DPO losses the lab offers (TRL 1.16 names), each with what it changes."""


@dataclass
class DpoConfig(AdapterConfig):
    accepted_formats = ("preference",)
    kind: str = "dpo"
    """Direct preference optimisation: learn to prefer the chosen answer over the rejected one, staying close to
    a frozen reference model."""
    beta: float = 0.1
    """Strength of the tie to the reference model: high beta (0.5) keeps the policy close to it, low beta (0.01)
    lets it follow the preferences further. TRL's default is 0.1."""
    loss_type: str = "sigmoid"
    """The preference loss; see DPO_LOSSES (sigmoid, ipo, hinge, robust, sigmoid_norm, apo_zero, nca_pair)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.kind == "dpo", "kind", "must be 'dpo' for a DpoConfig", self.kind)
        _check(isinstance(self.beta, (int, float)) and self.beta > 0, "beta", "must be > 0", self.beta)
        _check(self.loss_type in DPO_LOSSES, "loss_type", f"must be one of {', '.join(DPO_LOSSES)}", self.loss_type)
        _check(self.optim != "muon", "optim", "'muon' is offered for sft only; choose another for dpo", self.optim)
        if self.uses_lora:
            _check(self.init_lora_weights in ("default", "gaussian"), "init_lora_weights",
                   "must be default or gaussian for dpo: the reference is the model with adapters disabled, which "
                   "is the starting model only when adapters start at zero", self.init_lora_weights)


def load_dpo_data(cfg: DpoConfig):
    """Training pairs and held-out pairs (a separate file, a share of the training pairs, or none), as Datasets."""
    from datasets import Dataset

    from lab.rl_data import load_preference_mixture, load_preference_rows
    train = Dataset.from_list(load_preference_mixture(cfg.datasets, cfg.seed))
    if cfg.eval_dataset is not None:
        return train, Dataset.from_list(load_preference_rows(cfg.eval_dataset.resolved))
    if cfg.eval_fraction > 0:
        split = train.train_test_split(test_size=cfg.eval_fraction, seed=cfg.seed)
        return split["train"], split["test"]
    return train, None


def run_dpo(cfg: DpoConfig, job_dir: Path, callback: JobCallback) -> Path | None:
    """Train; returns the output folder (adapter or full model), or None when stopped before the end."""
    from peft import prepare_model_for_kbit_training
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    from lab.device import detect_device
    from lab.train_common import (train_and_save, count_parameters, data_dir_of, is_main_process, load_base_model,
                                  lora_config, training_arguments, update_status)
    device = detect_device()
    train_data, eval_data = load_dpo_data(cfg)
    model, tokenizer, _ = load_base_model(cfg.model_id, data_dir_of(job_dir), cfg.mode, device)
    if cfg.mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    args = TrlDPOConfig(**training_arguments(cfg, job_dir, device), max_length=cfg.max_length, beta=cfg.beta,
                        loss_type=[cfg.loss_type])
    trainer = DPOTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                         processing_class=tokenizer, callbacks=[callback],
                         peft_config=lora_config(cfg) if cfg.uses_lora else None)
    if is_main_process():
        update_status(job_dir, train_rows=len(train_data), eval_rows=len(eval_data) if eval_data else 0,
                      reference="adapters disabled" if cfg.uses_lora else "frozen copy of the model",
                      **count_parameters(trainer.model))
    return train_and_save(trainer, job_dir, callback)
