"""The supervised fine-tuning job config.

    python -m lab show-command assets/presets/sft_lora_qa.yaml
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.core.checks import check
from lab.training.configs.base import AdapterConfig


@dataclass
class SftConfig(AdapterConfig):
    kind: str = "sft"
    """Supervised fine-tuning: the model learns to produce the reference answer, token by token."""
    packing: bool = False
    """Concatenate short rows into blocks of max_length: no padding, more tokens per second on short data."""
    completion_only_loss: bool = True
    """Learn only the answer tokens (the prompt is masked out of the loss); off = learn the question too."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.kind == "sft", "kind", "must be 'sft' for an SftConfig", self.kind)
