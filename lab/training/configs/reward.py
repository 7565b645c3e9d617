"""The fields shared by the kinds that sample answers and score them with rewards (grpo, ppo).

    python -m lab show-command assets/presets/grpo_lora_qa.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.core.checks import MAX_TOKENS, check, check_whole
from lab.training.configs.base import CHAT_FORMATS, AdapterConfig
from lab.training.data.rewards import REWARDS


@dataclass
class RewardConfig(AdapterConfig):
    """Fields of the kinds that sample answers and score them (grpo, ppo)."""
    accepted_formats = CHAT_FORMATS
    rewards: list[str] = field(default_factory=lambda: ["token_f1", "format"])
    """Built-in reward functions, summed: token_f1 (0..1, words shared with the reference answer), format
    (0..1, one short sentence), length (-1..0, penalty for answers much longer than the reference)."""
    reward_weights: list[float] = field(default_factory=list)
    """One weight per reward (empty = 1 each): the score is sum(weight x reward)."""
    reward_model: str = ""
    """Instead of (or with) the built-in rewards: a local folder with a sequence-classification model (one
    output) whose score of prompt + answer is the reward. Empty = built-in rewards only."""
    temperature: float = 0.9
    """Sampling temperature of the answers: higher = more varied answers to compare, but more nonsense."""
    max_completion_length: int = 32
    """Longest sampled answer in tokens; generation is the slow part on a CPU, so keep it short."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.rewards:
            check(name in REWARDS, "rewards", f"names an unknown reward '{name}'; known: {', '.join(REWARDS)}",
                   self.rewards)
        check(bool(self.rewards) or bool(self.reward_model), "rewards",
               "needs at least one reward (or a reward_model)", self.rewards)
        check(not self.reward_weights or len(self.reward_weights) == len(self.rewards) + bool(self.reward_model),
               "reward_weights", f"needs one weight per reward ({len(self.rewards) + bool(self.reward_model)}, the "
               "reward_model last) or none", self.reward_weights)
        check(isinstance(self.temperature, (int, float)) and self.temperature > 0, "temperature", "must be > 0",
               self.temperature)
        check_whole(self.max_completion_length, "max_completion_length", 1, MAX_TOKENS)
        check(not self.has_eval, "eval_dataset or eval_fraction",
               f"is not supported for {self.kind}: evaluation would sample answers too; watch the reward curve",
               self.eval_dataset or self.eval_fraction)
        check(self.optim != "muon", "optim", f"'muon' is offered for sft only; choose another for {self.kind}",
               self.optim)
        if self.uses_lora:
            # The reference policy is the base with adapters switched off: that equals the starting policy only
            # when the adapters start at zero (B = 0).
            check(self.init_lora_weights in ("default", "gaussian"), "init_lora_weights",
                   "must be default or gaussian here: the reference is the model with adapters disabled, which is "
                   "the starting model only when adapters start at zero", self.init_lora_weights)
