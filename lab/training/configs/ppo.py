"""The proximal policy optimisation job config (the lab's own loop, lab/training/kinds/ppo.py).

    python -m lab show-command assets/presets/ppo_lora_qa.yaml
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.core.checks import check
from lab.training.configs.reward import RewardConfig


@dataclass
class PpoConfig(RewardConfig):
    kind: str = "ppo"
    """Proximal policy optimisation: sample answers, score them, and move the policy towards answers that scored
    better than its value head expected, a clipped step at a time, with a KL penalty to the reference model."""
    kl_coef: float = 0.05
    """Weight of the per-token KL penalty to the reference model, subtracted from the reward: higher keeps the
    answers close to what the model said before training (and guards against reward hacking)."""
    gamma: float = 1.0
    """Discount of later rewards. 1.0 = the final score counts fully at every answer token (usual for text)."""
    lam: float = 0.95
    """GAE lambda: 1 = advantages from the actual returns (unbiased, noisy); lower leans on the value head
    (less noise, more bias)."""
    cliprange: float = 0.2
    """Policy clipping: a token's probability ratio to the sampling policy counts only within 1 +- cliprange."""
    cliprange_value: float = 0.2
    """Value clipping: the value head's prediction may move at most this far from its rollout estimate per
    update before its loss stops pulling."""
    vf_coef: float = 0.1
    """Weight of the value loss next to the policy loss in the one backward pass."""
    ppo_epochs: int = 4
    """Passes over each rollout batch: more reuses the costly samples, but the policy drifts from the one that
    sampled them (clipfrac rises)."""
    num_mini_batches: int = 1
    """Mini-batches per rollout batch and pass; per_device_train_batch_size must be a multiple of it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.kind == "ppo", "kind", "must be 'ppo' for a PpoConfig", self.kind)
        check(isinstance(self.kl_coef, (int, float)) and self.kl_coef >= 0, "kl_coef", "must be >= 0", self.kl_coef)
        check(0 < self.gamma <= 1, "gamma", "must be in (0, 1]", self.gamma)
        check(0 <= self.lam <= 1, "lam", "must be in [0, 1]", self.lam)
        check(self.cliprange > 0, "cliprange", "must be > 0", self.cliprange)
        check(self.cliprange_value > 0, "cliprange_value", "must be > 0", self.cliprange_value)
        check(self.vf_coef >= 0, "vf_coef", "must be >= 0", self.vf_coef)
        for name in ("ppo_epochs", "num_mini_batches"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, name, "must be a whole number >= 1", value)
        check(self.per_device_train_batch_size % self.num_mini_batches == 0, "per_device_train_batch_size",
               f"must be a multiple of num_mini_batches ({self.num_mini_batches})", self.per_device_train_batch_size)
        check(self.gradient_accumulation_steps == 1, "gradient_accumulation_steps",
               "must be 1 for ppo (num_mini_batches splits the batch instead)", self.gradient_accumulation_steps)
        check(self.accelerate_config is None, "accelerate_config", "must be null: the lab's ppo runs in one process",
               self.accelerate_config)
        check(self.lr_scheduler_type != "reduce_lr_on_plateau", "lr_scheduler_type",
               "reduce_lr_on_plateau needs an eval metric, which ppo has not", self.lr_scheduler_type)
