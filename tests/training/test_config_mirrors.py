"""The lab's training configs re-declare fields of transformers', TRL's and peft's configs (so they validate, and
the command line and the Train tab build their forms, without importing those libraries). This checks each
re-declared field against the installed library class: the name still exists there, the lab's type is one the
library accepts, and the default is the library's, or differs on purpose, with the library default written
down here, so an upgrade that renames a field, narrows its type or moves a default fails here first.

    .venv/bin/python -m pytest -q tests/training/test_config_mirrors.py
"""

from __future__ import annotations

import dataclasses
import types
import typing
from enum import Enum
from typing import Any, Literal, Union

import pytest

from lab.cli.flags import field_default
from lab.training.configs import DpoConfig, GrpoConfig, SftConfig
from lab.training.configs.base import INIT_LORA_WEIGHTS, LORA_PRESETS, AdapterConfig, TrainConfig

TRAINING_ARGUMENTS = ("max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                      "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim",
                      "weight_decay", "max_grad_norm", "seed", "gradient_checkpointing", "logging_steps", "eval_steps",
                      "save_steps", "save_total_limit")
LORA = ("target_modules", "r", "lora_alpha", "lora_dropout", "bias", "use_rslora", "init_lora_weights")
SFT = ("packing", "completion_only_loss", "max_length")
DPO = ("beta", "loss_type", "max_length")
GRPO = ("num_generations", "beta", "epsilon", "loss_type", "temperature", "max_completion_length", "reward_weights")
# Not mirrors: warmup_ratio is the lab's own (transformers 5 reads a warmup_steps below 1 as a share of all steps,
# and lab.training.kinds.common passes it so); the PPO fields feed the lab's own PPO maths, not TRL's.

# (library class name, field) -> why the lab's type differs from the library's annotation and still works.
OTHER_TYPES = {
    ("LoraConfig", "lora_alpha"): "peft annotates int but only divides by it (scaling = lora_alpha / r)",
    ("DPOConfig", "loss_type"): "TRL takes a list of losses; the lab trains with one and passes [loss_type]",
}

# (library class name, field) -> the library's default the lab's differs from, and why it differs.
DELIBERATE: dict[tuple[str, str], tuple[Any, str]] = {
    ("TrainingArguments", "num_train_epochs"): (3.0, "one pass: the lab's datasets are small and runs short"),
    ("TrainingArguments", "per_device_train_batch_size"): (8, "4 fits the embedded model on a laptop CPU"),
    ("TrainingArguments", "learning_rate"): (5e-05, "LoRA wants about 1e-4 to 1e-3; full fine-tuning is opt-in"),
    ("TrainingArguments", "lr_scheduler_kwargs"): (None, "{} and None both mean no extra arguments"),
    ("TrainingArguments", "optim"): ("adamw_torch_fused", "the plain AdamW runs on every CPU and GPU"),
    ("TrainingArguments", "gradient_checkpointing"): (None, "None means off; the lab says False"),
    ("TrainingArguments", "logging_steps"): (500, "every step: the Train tab draws the curve as it goes"),
    ("TrainingArguments", "eval_steps"): (None, "None falls back to logging_steps; the lab evaluates every 20"),
    ("TrainingArguments", "save_steps"): (500, "short runs still get checkpoints to resume from"),
    ("TrainingArguments", "save_total_limit"): (None, "keep two checkpoints, not every one, in the data directory"),
    ("LoraConfig", "target_modules"): (None, "[] means the lora_preset's modules"),
    ("LoraConfig", "r"): (8, "16: room for a small model to learn a new document"),
    ("LoraConfig", "lora_alpha"): (8, "alpha = 2r, the usual scale"),
    ("LoraConfig", "lora_dropout"): (0.0, "a little dropout on small datasets"),
    ("LoraConfig", "init_lora_weights"): (True, "'default' is peft's True (B = 0, A Kaiming-uniform)"),
    ("SFTConfig", "max_length"): (1024, "512 tokens hold the lab's QA rows at half the memory"),
    ("SFTConfig", "completion_only_loss"): (None, "None means on for prompt-completion data; the lab says True"),
    ("DPOConfig", "max_length"): (1024, "512 tokens hold the lab's preference rows at half the memory"),
    ("GRPOConfig", "num_generations"): (8, "4 completions per prompt keep a CPU step short"),
    ("GRPOConfig", "temperature"): (1.0, "0.9: varied completions that still read as answers"),
    ("GRPOConfig", "max_completion_length"): (512, "short answers: 32 tokens"),
    ("GRPOConfig", "reward_weights"): (None, "[] and None both mean every reward weighs 1"),
}


def _members(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)


def accepts(library_hint: Any, ours: Any) -> bool:
    """Whether a value of the lab's type `ours` is one the library's annotation allows (int where float is)."""
    ours_origin = typing.get_origin(ours) or ours
    for member in _members(library_hint):
        origin = typing.get_origin(member) or member
        if member is Any or member == ours or origin is ours_origin and ours_origin in (list, dict, tuple):
            return True
        if ours is int and member is float:
            return True
        if ours is str and (origin is Literal or isinstance(member, type) and issubclass(member, (str, Enum))):
            return True  # the allowed names are checked against the Literal or Enum separately
    return False


def _library_classes() -> dict[str, type]:
    from peft import LoraConfig
    from transformers import TrainingArguments
    from trl import DPOConfig, GRPOConfig, SFTConfig

    return {c.__name__: c for c in (TrainingArguments, LoraConfig, SFTConfig, DPOConfig, GRPOConfig)}


MIRRORS = [(TrainConfig, "TrainingArguments", TRAINING_ARGUMENTS), (AdapterConfig, "LoraConfig", LORA),
           (SftConfig, "SFTConfig", SFT), (DpoConfig, "DPOConfig", DPO), (GrpoConfig, "GRPOConfig", GRPO)]
CASES = [(ours, library, name) for ours, library, names in MIRRORS for name in names]


@pytest.fixture(scope="module")
def libraries() -> dict[str, type]:
    return _library_classes()


@pytest.mark.parametrize("ours,library,name", CASES, ids=[f"{lib}.{name}" for _, lib, name in CASES])
def test_redeclared_field_matches_the_library(ours: type, library: str, name: str, libraries: dict[str, type]):
    lib = libraries[library]
    lib_fields = {f.name: f for f in dataclasses.fields(lib)}
    assert name in lib_fields, f"{library} no longer has {name}"
    our_type = typing.get_type_hints(ours)[name]
    lib_type = typing.get_type_hints(lib)[name]
    if (library, name) not in OTHER_TYPES:
        assert accepts(lib_type, our_type), f"{ours.__name__}.{name}: {our_type} where {library} takes {lib_type}"
    else:
        assert not accepts(lib_type, our_type), f"{library}.{name} takes {our_type} now; drop it from OTHER_TYPES"
    ours_default, lib_default = field_default(ours.__dataclass_fields__[name]), field_default(lib_fields[name])
    if isinstance(lib_default, list) and len(lib_default) == 1 and not isinstance(ours_default, list):
        lib_default = lib_default[0]  # DPOConfig.loss_type: a list of losses; the lab trains with one
    if (library, name) in DELIBERATE:
        expected, why = DELIBERATE[(library, name)]
        assert lib_default == expected, f"{library}.{name} now defaults to {lib_default!r}: re-check '{why}'"
        assert ours_default != lib_default, f"{ours.__name__}.{name} now equals {library}'s; drop it from DELIBERATE"
    else:
        assert ours_default == lib_default, f"{ours.__name__}.{name} = {ours_default!r}, {library}: {lib_default!r}"


def test_every_deliberate_difference_is_checked():
    assert set(DELIBERATE) | set(OTHER_TYPES) <= {(library, name) for _, library, name in CASES}


def test_written_out_names_are_the_librarys(libraries: dict[str, type]):
    """The LoRA choices the lab validates without importing peft are ones peft takes (schedulers and optimizers:
    tests/training/test_train_config.py)."""
    lora_hints = typing.get_type_hints(libraries["LoraConfig"])
    bias = next(typing.get_args(m) for m in _members(lora_hints["bias"]) if typing.get_origin(m) is Literal)
    assert set(bias) == {"none", "all", "lora_only"}
    init = {a for m in _members(lora_hints["init_lora_weights"]) if typing.get_origin(m) is Literal
            for a in typing.get_args(m)}
    assert set(INIT_LORA_WEIGHTS) - {"default"} <= init
    assert LORA_PRESETS["all"] == "all-linear"  # peft's name for every linear layer but the output head
    from peft.utils.constants import INCLUDE_LINEAR_LAYERS_SHORTHAND

    assert INCLUDE_LINEAR_LAYERS_SHORTHAND == "all-linear"
