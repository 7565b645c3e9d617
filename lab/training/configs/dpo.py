"""The direct preference optimisation job config and the DPO losses the lab offers.

    python -m lab show-command assets/presets/dpo_lora_qa.yaml
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.core.checks import check
from lab.training.configs.base import AdapterConfig

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
        check(self.kind == "dpo", "kind", "must be 'dpo' for a DpoConfig", self.kind)
        check(isinstance(self.beta, (int, float)) and self.beta > 0, "beta", "must be > 0", self.beta)
        check(self.loss_type in DPO_LOSSES, "loss_type", f"must be one of {', '.join(DPO_LOSSES)}", self.loss_type)
        check(self.optim != "muon", "optim", "'muon' is offered for sft only; choose another for dpo", self.optim)
        if self.uses_lora:
            check(self.init_lora_weights in ("default", "gaussian"), "init_lora_weights",
                   "must be default or gaussian for dpo: the reference is the model with adapters disabled, which "
                   "is the starting model only when adapters start at zero", self.init_lora_weights)
