"""Supervised fine-tuning (full, LoRA, QLoRA) with TRL's SFTTrainer.

    python -m lab.training.jobs.launch assets/presets/sft_lora_qa.yaml

The data arrive as conversational prompt/completion rows (lab/training/data/datasets.py), so TRL applies
the model's chat template and, with completion_only_loss, masks the prompt tokens out of the
loss: labels are -100 on the prompt, the answer's token ids after it.
"""

from __future__ import annotations

from pathlib import Path

from trl import SFTConfig as TrlSFTConfig
from trl import SFTTrainer

from lab.core.device import detect_device
from lab.training.configs.sft import SftConfig
from lab.training.data.datasets import load_train_eval
from lab.training.jobs.callback import JobCallback
from lab.training.jobs.files import data_dir_of, is_main_process
from lab.training.jobs.status import update_status
from lab.training.kinds.common import (
    build_model,
    count_parameters,
    optimizer_override,
    train_and_save,
    training_arguments,
)


def run_sft(cfg: SftConfig, job_dir: Path, callback: JobCallback) -> Path | None:
    """Train; returns the output folder (adapter or full model), or None when stopped before the end."""
    device = detect_device()
    train_data, eval_data = load_train_eval(cfg.datasets, cfg.eval_dataset, cfg.eval_fraction, cfg.seed)
    model, tokenizer, _ = build_model(cfg, data_dir_of(job_dir), device)
    if is_main_process():
        update_status(job_dir, train_rows=len(train_data), eval_rows=len(eval_data) if eval_data else 0,
                      load_in_4bit=bool(getattr(model, "is_loaded_in_4bit", False)), **count_parameters(model))
    args = TrlSFTConfig(**training_arguments(cfg, job_dir, device), max_length=cfg.max_length,
                        packing=cfg.packing, completion_only_loss=cfg.completion_only_loss)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                         processing_class=tokenizer, callbacks=[callback],
                         optimizer_cls_and_kwargs=optimizer_override(cfg))
    return train_and_save(trainer, job_dir, callback)
