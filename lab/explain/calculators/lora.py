"""LoRA numbers from peft itself: the scale of the update and the trainable parameters of a model.

    python -c "from lab.explain.calculators.lora import lora_scale; print(lora_scale(16, 32, use_rslora=True))"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lab.core.checks import check
from lab.training.configs.base import LORA_PRESETS

if TYPE_CHECKING:  # peft and transformers are imported by the calculations that ask them, not by every importer
    from transformers import PretrainedConfig, PreTrainedModel


def lora_scale(r: int, alpha: float, use_rslora: bool = False) -> float:
    """The factor peft multiplies the adapter's output by: alpha / r, or alpha / sqrt(r) with rsLoRA.

    Read from the `scaling` of a real peft LoRA layer wrapped around a one-layer toy model, so it
    follows whatever rule the installed peft applies.
    """
    check(isinstance(r, int) and r >= 1, "r", "must be a whole number >= 1", r)
    check(alpha > 0, "lora_alpha", "must be > 0", alpha)
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    toy = torch.nn.Sequential(torch.nn.Linear(8, 8))
    peft_model = get_peft_model(toy, LoraConfig(r=r, lora_alpha=alpha, use_rslora=use_rslora, target_modules=["0"]))
    layer = next(m for m in peft_model.modules() if isinstance(m, LoraLayer))
    return float(layer.scaling["default"])


@dataclass(frozen=True)
class TrainableParams:
    trainable: int
    """Parameters that get gradients (adapters, plus biases when bias != 'none')."""
    total: int
    """All parameters of the adapted model, adapters included (peft's 'all params')."""
    share: float
    """trainable / total."""
    target_modules: list[str]
    """The module names peft actually wrapped, e.g. ['q_proj', 'v_proj']."""
    adapted_layers: int
    """How many linear layers got an adapter."""


def _config_of(model_or_config: PreTrainedModel | PretrainedConfig | str) -> PretrainedConfig:
    from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

    if isinstance(model_or_config, PreTrainedModel):
        return model_or_config.config
    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config
    return AutoConfig.from_pretrained(model_or_config)


def lora_targets(target_modules_or_preset: str | list[str]) -> list[str] | str:
    """A preset name (minimal, attention_only, ffn_only, all) or an explicit list ('custom')."""
    if isinstance(target_modules_or_preset, str):
        check(target_modules_or_preset in LORA_PRESETS, "target_modules",
               f"must be a preset ({', '.join(LORA_PRESETS)}) or a list of module names", target_modules_or_preset)
        return LORA_PRESETS[target_modules_or_preset]
    check(len(target_modules_or_preset) > 0, "target_modules", "must name at least one module",
           target_modules_or_preset)
    return list(target_modules_or_preset)


def trainable_params(model_or_config: PreTrainedModel | PretrainedConfig | str, r: int,
                     target_modules_or_preset: str | list[str] = "all", bias: str = "none") -> TrainableParams:
    """Trainable and total parameters after peft's get_peft_model, on a copy built on the meta device.

    The model is rebuilt from its config with no memory behind the weights (meta tensors), so a 7B
    model costs a second, and a model passed in is never modified. The count is peft's own
    `get_nb_trainable_parameters` (what `print_trainable_parameters` prints), cross-checked against
    a plain sum over `requires_grad` parameters.
    """
    check(isinstance(r, int) and r >= 1, "r", "must be a whole number >= 1", r)
    check(bias in ("none", "lora_only", "all"), "bias", "must be none, lora_only or all", bias)
    config = _config_of(model_or_config)
    import torch
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    lora = LoraConfig(r=r, lora_alpha=2 * r, target_modules=lora_targets(target_modules_or_preset), bias=bias)
    with torch.device("meta"):
        model = get_peft_model(AutoModelForCausalLM.from_config(config), lora)
    trainable, total = model.get_nb_trainable_parameters()
    by_hand = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if by_hand != trainable:
        raise AssertionError(f"peft counts {trainable} trainable parameters but requires_grad sums to {by_hand}")
    return TrainableParams(trainable=trainable, total=total, share=trainable / total,
                           target_modules=sorted(model.peft_config["default"].target_modules),
                           adapted_layers=sum(isinstance(m, LoraLayer) for m in model.modules()))
