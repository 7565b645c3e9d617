"""Group relative policy optimisation (full, LoRA, QLoRA) with TRL's GRPOTrainer.

    python -m lab train assets/presets/grpo_lora_qa.yaml

For every prompt the model samples a group of num_generations answers; each answer is scored by
the reward functions of lab/rewards.py (and optionally a reward model), and its advantage is its
reward minus the group's mean, divided by the group's spread. No value model is needed: the
group is the baseline. beta > 0 adds a KL penalty to the reference (the model with its adapters
switched off under LoRA).

lab/train_config.py imports this module for GrpoConfig, so TRL is imported inside run_grpo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lab.rewards import REWARDS, RewardConfig, load_reward_model
from lab.train_config import _check

if TYPE_CHECKING:
    from lab.train_common import JobCallback

GRPO_LOSSES: dict[str, str] = {
    "dapo": "TRL's default: token losses averaged over every answer token of the batch, so long answers do not "
            "count less per token.",
    "grpo": "The original: each answer's token losses averaged over its own length (favours short right answers "
            "and long wrong ones).",
    "dr_grpo": "Dr. GRPO: token losses divided by a constant (max_completion_length): no length bias.",
    "bnpo": "Like dapo but normalised over the local batch only.",
}
"""GRPO losses the lab offers (TRL 1.16 names), each with what it changes."""


@dataclass
class GrpoConfig(RewardConfig):
    kind: str = "grpo"
    """Group relative policy optimisation: sample a group of answers per prompt and push the model towards the
    better-than-average ones."""
    num_generations: int = 4
    """Answers sampled per prompt (the group). per_device_train_batch_size x gradient_accumulation_steps counts
    answers, so it must be a multiple of this; prompts per step = that product / num_generations."""
    beta: float = 0.0
    """KL penalty to the reference model. 0 (TRL's default) skips the reference forward pass entirely; 0.001-0.04
    keeps the policy from drifting far from what it was."""
    epsilon: float = 0.2
    """Clipping of the policy ratio: an answer's probability may move by at most this share per update."""
    loss_type: str = "dapo"
    """How token losses are averaged; see GRPO_LOSSES (dapo, grpo, dr_grpo, bnpo)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.kind == "grpo", "kind", "must be 'grpo' for a GrpoConfig", self.kind)
        _check(isinstance(self.num_generations, int) and self.num_generations >= 2, "num_generations",
               "must be a whole number >= 2 (the advantage compares answers within a group)", self.num_generations)
        answers = self.per_device_train_batch_size * self.gradient_accumulation_steps
        _check(answers % self.num_generations == 0, "per_device_train_batch_size",
               f"x gradient_accumulation_steps ({answers} answers per step) must be a multiple of num_generations "
               f"({self.num_generations})", self.per_device_train_batch_size)
        _check(isinstance(self.beta, (int, float)) and self.beta >= 0, "beta", "must be >= 0", self.beta)
        _check(0 < self.epsilon < 1, "epsilon", "must be in (0, 1)", self.epsilon)
        _check(self.loss_type in GRPO_LOSSES, "loss_type", f"must be one of {', '.join(GRPO_LOSSES)}", self.loss_type)


def run_grpo(cfg: GrpoConfig, job_dir: Path, callback: JobCallback) -> Path | None:
    """Train; returns the output folder (adapter or full model), or None when stopped before the end."""
    from datasets import Dataset
    from peft import prepare_model_for_kbit_training
    from trl import GRPOConfig as TrlGRPOConfig
    from trl import GRPOTrainer

    from lab.device import detect_device
    from lab.rl_data import load_prompt_mixture, within_max_length
    from lab.train_common import (train_and_save, count_parameters, data_dir_of, is_main_process, load_base_model,
                                  lora_config, training_arguments, update_status)
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
