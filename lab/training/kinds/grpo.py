"""Group relative policy optimisation (full, LoRA, QLoRA) with TRL's GRPOTrainer.

    python -m lab train assets/presets/grpo_lora_qa.yaml

For every prompt the model samples a group of num_generations answers; each answer is scored by
the reward functions of lab/training/data/rewards.py (and optionally a reward model), and its advantage is its
reward minus the group's mean, divided by the group's spread. No value model is needed: the
group is the baseline. beta > 0 adds a KL penalty to the reference (the model with its adapters
switched off under LoRA).

The job's fields are GrpoConfig (lab/training/configs/grpo.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lab.training.configs.grpo import GrpoConfig
from lab.training.data.rewards import REWARDS, load_reward_model

if TYPE_CHECKING:
    from lab.training.jobs.callback import JobCallback



def run_grpo(cfg: GrpoConfig, job_dir: Path, callback: JobCallback) -> Path | None:
    """Train; returns the output folder (adapter or full model), or None when stopped before the end."""
    from datasets import Dataset
    from peft import prepare_model_for_kbit_training
    from trl import GRPOConfig as TrlGRPOConfig
    from trl import GRPOTrainer

    from lab.core.device import detect_device
    from lab.training.data.rl import load_prompt_mixture, within_max_length
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
    model, tokenizer, _ = load_base_model(cfg.model_id, data_dir_of(job_dir), cfg.mode, device)
    rows, dropped = within_max_length(load_prompt_mixture(cfg.datasets, cfg.seed), tokenizer, cfg.max_length)
    train_data = Dataset.from_list(rows)
    if cfg.mode == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    reward_funcs: list = [REWARDS[name] for name in cfg.rewards]
    reward_tokenizers: list = [None] * len(reward_funcs)
    if cfg.reward_model:
        reward_model, reward_tokenizer = load_reward_model(cfg.reward_model, device.device)
        reward_funcs.append(reward_model)
        reward_tokenizers.append(reward_tokenizer)
    args = TrlGRPOConfig(**training_arguments(cfg, job_dir, device), num_generations=cfg.num_generations,
                         temperature=cfg.temperature, max_completion_length=cfg.max_completion_length,
                         beta=cfg.beta, epsilon=cfg.epsilon, loss_type=cfg.loss_type,
                         reward_weights=cfg.reward_weights or None)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_data,
                          processing_class=tokenizer, reward_processing_classes=reward_tokenizers,
                          callbacks=[callback], peft_config=lora_config(cfg) if cfg.uses_lora else None)
    if is_main_process():
        update_status(job_dir, train_rows=len(train_data), prompts_dropped=dropped, eval_rows=0,
                      **count_parameters(trainer.model))
    return train_and_save(trainer, job_dir, callback)
