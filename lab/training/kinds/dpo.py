"""Direct preference optimisation (full, LoRA, QLoRA) with TRL's DPOTrainer.

    python -m lab train assets/presets/dpo_lora_qa.yaml

Each row pairs a prompt with a chosen and a rejected answer. DPO raises the policy's
log-probability of the chosen answer relative to a frozen reference model and lowers it for the
rejected one; beta sets how far the policy may move from the reference. With LoRA the reference
is the same model with its adapters switched off (TRL gets a `peft_config` and wraps the model
itself), so no second copy is loaded; full fine-tuning loads a second frozen copy.

The job's fields are DpoConfig (lab/training/configs/dpo.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lab.training.configs.dpo import DpoConfig

if TYPE_CHECKING:
    from lab.training.jobs.callback import JobCallback



def load_dpo_data(cfg: DpoConfig):
    """Training pairs and held-out pairs (a separate file, a share of the training pairs, or none), as Datasets."""
    from datasets import Dataset

    from lab.training.data.rl import load_preference_mixture, load_preference_rows
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

    from lab.core.device import detect_device
    from lab.training.jobs.files import data_dir_of, is_main_process
    from lab.training.jobs.status import update_status
    from lab.training.kinds.common import (
        count_parameters,
        load_base_model,
        lora_config,
        train_and_save,
        training_arguments,
    )
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
