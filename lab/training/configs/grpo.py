"""The group relative policy optimisation job config and the GRPO losses the lab offers.

    python -m lab show-command assets/presets/grpo_lora_qa.yaml
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.core.checks import check
from lab.training.configs.reward import RewardConfig

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
        check(self.kind == "grpo", "kind", "must be 'grpo' for a GrpoConfig", self.kind)
        check(isinstance(self.num_generations, int) and self.num_generations >= 2, "num_generations",
               "must be a whole number >= 2 (the advantage compares answers within a group)", self.num_generations)
        answers = self.per_device_train_batch_size * self.gradient_accumulation_steps
        check(answers % self.num_generations == 0, "per_device_train_batch_size",
               f"x gradient_accumulation_steps ({answers} answers per step) must be a multiple of num_generations "
               f"({self.num_generations})", self.per_device_train_batch_size)
        check(isinstance(self.beta, (int, float)) and self.beta >= 0, "beta", "must be >= 0", self.beta)
        check(0 < self.epsilon < 1, "epsilon", "must be in (0, 1)", self.epsilon)
        check(self.loss_type in GRPO_LOSSES, "loss_type", f"must be one of {', '.join(GRPO_LOSSES)}", self.loss_type)
