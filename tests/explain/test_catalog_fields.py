"""The catalog in context: every config field of every trainer opens an entry, a name shared by trainers opens
the entry of the trainer asked for, and what entries state about library defaults is read from the installed
libraries, so an upgrade that changes a default fails here instead of teaching a stale number."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields

import pytest
import torch
from peft import LoftQConfig
from transformers import TrainingArguments
from transformers.masking_utils import find_packed_sequence_indices
from trl import DPOConfig, GRPOConfig, RewardConfig, SFTConfig
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from lab.explain.catalog import AmbiguousName, get, lookup, meanings, render_meanings
from lab.training.configs import CONFIG_KINDS
from lab.training.configs.base import DatasetSpec
from lab.training.configs.dpo import DPO_LOSSES
from lab.training.configs.grpo import GRPO_LOSSES

CONFIG_FIELDS = sorted({(kind, f.name) for kind, cls in CONFIG_KINDS.items() for f in fields(cls)}
                       | {("dataset", f.name) for f in fields(DatasetSpec)})

# Knobs the two reference manuals name that the catalog used to miss (issue 14, point 5), in their spelling.
MANUAL_NAMES = ["save_best_only", "sophia_beta1", "sophia_beta2", "policy_checkpoint", "log_every", "output_dir",
                "use_lora", "reward_model_name", "mixture_weights", "eval_steps", "mini_batch_size",
                "reference_checkpoint", "ademamix", "sgd", "rmsprop", "orthogonal", "gaussian", "olora",
                "leaky_relu", "scheduler.none"]


def _default(cls: type, name: str):
    f = cls.__dataclass_fields__[name]
    return f.default if f.default is not MISSING else f.default_factory()


@pytest.mark.parametrize("kind,name", CONFIG_FIELDS, ids=lambda v: str(v))
def test_every_config_field_of_every_trainer_has_an_entry(kind, name):
    entry = lookup(name, kind)
    assert entry.what.strip()


@pytest.mark.parametrize("name", MANUAL_NAMES)
def test_every_knob_of_the_reference_manuals_has_an_entry(name):
    assert get(name).what.strip()


def test_a_name_shared_by_trainers_opens_the_entry_of_the_trainer_asked_for():
    # GRPO's beta is a KL weight whose default (lab and TRL) is 0; DPO's beta is a preference temperature.
    assert lookup("beta", "grpo").name == "grpo_beta"
    assert lookup("beta", "dpo").name == "dpo_beta"
    assert "0.0" in lookup("beta", "grpo").default and "0.1" in lookup("beta", "dpo").default
    # The lab's PPO keeps a reference model, so kl_coef must not open GRPO's "no reference model" entry.
    ppo = lookup("kl_coef", "ppo")
    assert ppo.name == "ppo_kl_coef" and "reference" in ppo.what and ppo is get("kl_coef")
    assert lookup("loss_type", "grpo").name == "grpo_loss_type"
    assert lookup("loss_type", "dpo").name == "dpo_loss_type"
    assert lookup("num_mini_batches", "ppo").name == "num_mini_batches"
    assert "num_mini_batches" in get("mini_batch_size").what
    assert lookup("per_device_train_batch_size", "ppo").name == "ppo_batch_size"
    assert lookup("per_device_train_batch_size", "sft").name == "per_device_train_batch_size"


@pytest.mark.parametrize("name", ["beta", "loss_type"])
def test_an_ambiguous_bare_name_lists_its_meanings_instead_of_picking_one(name):
    found = meanings(name)
    assert len({e.name for e in found.values()}) == 2
    with pytest.raises(AmbiguousName) as err:
        get(name)
    for kind, entry in found.items():
        assert f"{kind}: {entry.name}" in str(err.value)
    md = render_meanings(name)
    assert all(entry.title in md for entry in found.values())
    with pytest.raises(AmbiguousName, match="sft"):
        lookup(name, "sft")  # sft has no such field: still the list, not a guess


def test_explicit_field_entries_state_the_lab_config_default():
    """An entry tied to a lab field by `fields` names that field's default as the config class defines it."""
    def shown(value) -> str:
        if value in ("", []):
            return "empty"
        return f"[{', '.join(map(str, value))}]" if isinstance(value, list) else str(value)
    checked = 0
    for kind, name in CONFIG_FIELDS:
        entry = lookup(name, kind)
        cls = DatasetSpec if kind == "dataset" else CONFIG_KINDS[kind]
        if f"{kind}.{name}" not in entry.fields or cls.__dataclass_fields__[name].default is MISSING \
                and cls.__dataclass_fields__[name].default_factory is MISSING or kind == "dataset":
            continue
        assert shown(_default(cls, name)) in entry.default, f"{entry.name} does not state {kind}.{name}'s default"
        checked += 1
    assert checked >= 15


# ---- what entries say about the libraries, checked against the installed libraries -------------------------
@pytest.mark.parametrize("entry,cls,field", [
    ("dpo_beta", DPOConfig, "beta"), ("grpo_beta", GRPOConfig, "beta"),
    ("num_generations", GRPOConfig, "num_generations"), ("grpo_temperature", GRPOConfig, "temperature"),
    ("logging_steps", SFTConfig, "logging_steps"), ("grpo_loss_type", GRPOConfig, "loss_type"),
    ("dpo_loss_type", DPOConfig, "loss_type"),
])
def test_trl_defaults_named_by_entries_are_the_installed_ones(entry, cls, field):
    value = _default(cls, field)
    value = value[0] if isinstance(value, list) else value
    assert str(value) in get(entry).default


def test_learning_rate_entry_states_every_trainers_installed_default():
    """learning_rate lists each trainer's default as 'Class value'; each is read back from the installed class."""
    stated = dict(re.findall(r"(\w+(?:Config|Arguments)) ([0-9.]+e-?[0-9]+)", get("learning_rate").default))
    libraries = {c.__name__: c for c in (TrainingArguments, SFTConfig, DPOConfig, GRPOConfig, RewardConfig)}
    assert set(stated) == set(libraries)
    for name, value in stated.items():
        assert float(value) == _default(libraries[name], "learning_rate"), name


def test_loftq_entry_states_peft_defaults():
    text = get("loftq_iter").default
    assert f"loftq_iter={_default(LoftQConfig, 'loftq_iter')}" in text
    assert f"loftq_bits={_default(LoftQConfig, 'loftq_bits')}" in text


# TRL 1.16's SFT and GRPO configs default gradient_checkpointing=True, a name transformers 5 deprecates: the
# warning is TRL's default, not a call of ours (the lab passes activation_checkpointing).
@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_grpo_and_dpo_loss_entries_name_the_lab_losses_and_trl_accepts_them():
    for loss in GRPO_LOSSES:
        assert loss in get("grpo_loss_type").what
        GRPOConfig(output_dir="/tmp/unused", loss_type=loss, use_cpu=True, bf16=False)  # TRL refuses unknown names
    for loss in DPO_LOSSES:
        assert loss in get("dpo_loss_type").what


def test_packing_entry_matches_trl_best_fit_decreasing_and_padding_free():
    """TRL 1.16 packs with best-fit decreasing and trains padding-free: position ids restart per example, and
    transformers turns restarting position ids into separate sequences, so examples cannot attend to each other."""
    assert _default(SFTConfig, "packing_strategy") == "bfd"
    text = get("packing").what + get("packing").too_high
    assert "best-fit decreasing" in text and "padding-free" in text and "wrapped" in text
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    batch = collator([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert find_packed_sequence_indices(batch["position_ids"]).tolist() == [[0, 0, 0, 1, 1]]


def test_eval_steps_entry_is_the_lab_interval_and_names_the_other_meaning(tmp_path):
    """The lab passes eval_steps to TrainingArguments with eval_strategy 'steps': an interval in updates."""
    from lab.core.device import choose_device
    from lab.training.configs.sft import SftConfig
    from lab.training.kinds.common import training_arguments
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    cfg = SftConfig(datasets=[{"path": str(data), "format": "qa"}], eval_fraction=0.5, eval_steps=7)
    args = TrainingArguments(**training_arguments(cfg, tmp_path, choose_device(has_cuda=False, has_flash_attn=False)))
    assert (args.eval_strategy.value, args.eval_steps) == ("steps", 7)
    entry = lookup("eval_steps", "sft")
    assert "interval" in entry.what and "validation batches" in entry.what


def test_ppo_mini_batches_split_the_rollout_batch_as_the_entry_says(tmp_path):
    from lab.training.configs.ppo import PpoConfig
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    ok = PpoConfig(datasets=[{"path": str(data), "format": "qa"}], per_device_train_batch_size=4, num_mini_batches=2)
    assert ok.per_device_train_batch_size // ok.num_mini_batches == 2
    with pytest.raises(ValueError, match="num_mini_batches"):
        PpoConfig(datasets=[{"path": str(data), "format": "qa"}], per_device_train_batch_size=3, num_mini_batches=2)
    assert "per_device_train_batch_size / num_mini_batches" in get("num_mini_batches").what


def test_orthogonal_init_starts_at_the_base_model_as_the_entry_says():
    from peft import LoraConfig, get_peft_model
    toy = torch.nn.Sequential(torch.nn.Linear(8, 8))
    model = get_peft_model(toy, LoraConfig(r=4, target_modules=["0"], init_lora_weights="orthogonal"))
    layer = model.base_model.model[0]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert a.abs().sum() > 0 and b.abs().sum() > 0
    assert torch.allclose(b @ a, torch.zeros(8, 8), atol=1e-6)
    assert "product B x A is" in get("orthogonal").what
