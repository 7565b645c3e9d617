"""A sweep's plan before anything runs: per point its overrides, steps, examples, tokens and LoRA scale,
and the checks that need the model or the data.

    python -m lab sweep --suggest packing --plan --json

The plan is how a learner (and the tests) can see a sweep's controlled variables: equal examples and
tokens where the knob changes how much data a step holds, equal scale where a tie holds it. The model-
aware check refuses a grid whose points differ only in something the model ignores (bias on a model
without biases: peft's trainable parameter count does not move), which the config alone cannot know.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.core.access import load_yaml_file
from lab.explain.calculators.lora import lora_scale, trainable_params
from lab.explain.sweeps.config import (
    DEFAULT_BASE,
    PRESETS_DIR,
    QUICK_OVERRIDES,
    SUGGESTED_GRIDS,
    SweepConfig,
    SweepPoint,
    suggest_sweep,
)
from lab.explain.sweeps.tokens import TokenProfile, token_profile
from lab.training.configs import config_from_dict
from lab.training.configs.base import TrainConfig

LORA_STRUCTURE = ("bias", "lora_preset", "target_modules")
"""Knobs that only change which parameters train: a grid over them is checked against peft's count."""


@dataclass(frozen=True)
class PlannedPoint:
    point: str
    overrides: dict[str, Any]
    """What this point sets on the base: its grid values, tied knobs and budget-derived max_steps."""
    max_steps: int
    examples: float
    """Examples (training rows) the point trains on: max_steps x batch x accumulation (x examples per packed
    row when packing)."""
    tokens: int | None
    """Planned training tokens: examples x the data's tokens per example (None without a token profile)."""
    lora_scale: float | None
    """The factor peft multiplies the adapter by at this point (None for full fine-tuning)."""

    def as_dict(self) -> dict[str, Any]:
        return {"point": self.point, "overrides": self.overrides, "max_steps": self.max_steps,
                "examples": round(self.examples, 2), "tokens": self.tokens, "lora_scale": self.lora_scale}


def measure_packing(base: TrainConfig, models_dir: str | Path) -> TokenProfile:
    """The token profile of a sweep's base data (rows, tokens, TRL-packed rows), read with the model's tokenizer."""
    return token_profile(base, models_dir)


def suggest(knob: str, models_dir: str | Path, base: str | dict[str, Any] = DEFAULT_BASE,
            overrides: dict[str, Any] | None = None) -> SweepConfig:
    """suggest_sweep, with examples_per_packed_row measured on the base's data when the grid packs, then the
    model-aware check (check_effective)."""
    spec = SUGGESTED_GRIDS.get(knob, {})
    ratio = None
    if spec.get("budget") == "examples" and "packing" in spec.get("grid", {}):
        data = load_yaml_file(PRESETS_DIR / f"{base}.yaml") if isinstance(base, str) else dict(base)
        cfg = config_from_dict(data | QUICK_OVERRIDES | (overrides or {}), "sweep base")
        ratio = measure_packing(cfg, models_dir).examples_per_packed_row
    sweep = suggest_sweep(knob, base, overrides, examples_per_packed_row=ratio)
    check_effective(sweep, models_dir)
    return sweep


def fill_packing(data: dict[str, Any], models_dir: str | Path) -> dict[str, Any]:
    """A sweep mapping with budget 'examples' and packing somewhere (grid, overrides or base) gets its
    examples_per_packed_row measured on the base's data when it has none; anything else is returned as is."""
    if not isinstance(data, dict) or data.get("budget") != "examples" or data.get("examples_per_packed_row"):
        return data
    base = data.get("base")
    base_data = load_yaml_file(PRESETS_DIR / f"{base}.yaml") if isinstance(base, str) else base
    if not isinstance(base_data, dict):
        return data  # SweepConfig names the problem
    overrides = data.get("overrides") or {}
    packs = "packing" in (data.get("grid") or {}) or overrides.get("packing") or base_data.get("packing")
    if not packs:
        return data
    cfg = config_from_dict(base_data | overrides, "sweep base")
    return data | {"examples_per_packed_row": measure_packing(cfg, models_dir).examples_per_packed_row}


def check_effective(sweep: SweepConfig, models_dir: str | Path) -> None:
    """Refuse a grid over bias, lora_preset or target_modules whose points give peft the same trainable
    parameters (bias on a model without biases), with the counts in the message."""
    structural = [k for k in sweep.grid if k in LORA_STRUCTURE]
    points = sweep.points()
    if not structural or not getattr(points[0].config, "uses_lora", False):
        return
    from lab.inference.models import resolve_model_path
    source = resolve_model_path(points[0].config.model_id, Path(models_dir))
    counts = {p.label: _trainable(p, source) for p in points}
    others = [k for k in sweep.grid if k not in LORA_STRUCTURE]
    if not others and len(set(counts.values())) == 1:
        listed = ", ".join(f"{label}: {n:,}" for label, n in counts.items())
        raise ValueError(f"every point trains the same parameters ({listed}, counted by peft on "
                         f"{points[0].config.model_id}): {', '.join(structural)} changes nothing on this model "
                         "(it has no bias vectors in the adapted layers), so the points would be identical jobs. "
                         "This sweep is refused.")


def _trainable(point: SweepPoint, source: str) -> int:
    cfg = point.config
    targets = cfg.target_modules if cfg.lora_preset == "custom" else cfg.lora_preset
    return trainable_params(source, cfg.r, targets, cfg.bias).trainable


def plan_sweep(sweep: SweepConfig, models_dir: str | Path | None = None) -> list[PlannedPoint]:
    """Every point's overrides, max_steps, examples, planned tokens and LoRA scale, without running anything.
    Tokens need the data's token profile (SFT and pretraining, with models_dir to find the tokenizer)."""
    profile = None
    points = sweep.points()
    if models_dir is not None and points[0].config.kind in ("sft", "pretrain"):
        profile = token_profile(points[0].config, models_dir)
    planned = []
    for point in points:
        cfg = point.config
        per_row = (sweep.examples_per_packed_row or (profile.examples_per_packed_row if profile else 1.0)
                   ) if getattr(cfg, "packing", False) else 1.0
        examples = cfg.max_steps * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * per_row
        tokens = round(examples * profile.tokens_per_row) if profile else None
        scale = lora_scale(cfg.r, cfg.lora_alpha, cfg.use_rslora) if getattr(cfg, "uses_lora", False) else None
        overrides = dict(point.values)
        planned.append(PlannedPoint(point.label, overrides, cfg.max_steps, examples, tokens, scale))
    return planned
