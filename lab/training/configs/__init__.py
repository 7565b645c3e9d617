"""Training job configs: one dataclass per kind, each field documented once, saved as YAML.

    python -m lab show-command assets/presets/sft_lora_qa.yaml

The docstring under each field is the one explanation of that knob: `field_docs()` reads it
back for the Train tab and the CLI, so UI, CLI and code cannot disagree. Every value is checked
in `__post_init__` and a bad one raises a `ValueError` naming the field. `CONFIG_KINDS` below is
the one table of kinds: a new kind adds its config module and one line here.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from lab.training.configs.base import TrainConfig
from lab.training.configs.dpo import DpoConfig
from lab.training.configs.grpo import GrpoConfig
from lab.training.configs.ppo import PpoConfig
from lab.training.configs.pretrain import PretrainConfig
from lab.training.configs.sft import SftConfig

CONFIG_KINDS: dict[str, type[TrainConfig]] = {
    "sft": SftConfig, "dpo": DpoConfig, "grpo": GrpoConfig, "ppo": PpoConfig, "pretrain": PretrainConfig,
}
"""kind -> its config class."""


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build the config of the kind named in `data`; an unknown kind or key raises naming it."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of field: value, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in CONFIG_KINDS:
        raise ValueError(f"{source}: kind must be one of {', '.join(CONFIG_KINDS)}; got {kind!r}")
    cls = CONFIG_KINDS[kind]
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ValueError(f"{source}: unknown key '{key}' for kind {kind}")
    return cls(**data)


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    return config_from_dict(data, str(path))
