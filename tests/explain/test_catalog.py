"""The hyperparameter catalog: complete, renderable, searchable, and right where the sources were wrong."""

from __future__ import annotations

import pytest
from transformers.trainer_utils import SchedulerType

from lab.explain import calculators
from lab.explain.catalog import GROUPS, LIVE_CALCULATORS, entries, get, render_markdown, search
from lab.training.configs.base import LORA_PRESETS

# Every knob issue 5 names, spelled as the catalog names it (aliases are checked separately).
ISSUE_NAMES = [
    # loading
    "dtype", "load_in_4bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype",
    # LoRA
    "r", "lora_alpha", "lora_dropout", "bias", "use_rslora", "loftq_config", "init_lora_weights",
    "target_modules", "lora_preset", "lora_preset.minimal", "lora_preset.attention_only", "lora_preset.ffn_only",
    "lora_preset.all", "lora_preset.custom",
    # trainer
    "packing", "per_device_train_batch_size", "gradient_accumulation_steps", "warmup_steps", "warmup_ratio",
    "learning_rate", "optim", "weight_decay", "lr_scheduler_type", "lr_scheduler_kwargs", "max_grad_norm",
    "max_steps", "num_train_epochs", "eval_steps", "save_steps",
    # architecture
    "tokenizer", "positional_encoding", "attention_type", "norm_type", "activation", "d_model", "n_heads",
    "n_kv_heads", "d_ff", "n_layers", "vocab_size", "max_seq_len", "dropout", "sliding_window", "attention_bias",
    "norm_eps",
    # optimizers
    "adamw", "adam_beta1", "adam_beta2", "adam_epsilon", "adafactor", "lion", "lion_betas", "sophia", "sophia_rho",
    "muon", "muon_momentum", "muon_nesterov",
    # preference and RL
    "dpo_beta", "ref_model", "num_generations", "grpo_temperature", "ppo_epochs", "clip_range", "vf_coef", "gamma",
    "gae_lambda", "ppo_batch_size", "mini_batch_size", "max_new_tokens", "temperature", "top_k", "top_p",
]
# The issue's wording for some knobs, which must reach the same entries.
ISSUE_ALIASES = {"nf4": "bnb_4bit_quant_type", "double_quant": "bnb_4bit_use_double_quant",
                 "compute_dtype": "bnb_4bit_compute_dtype", "loftq": "loftq_config", "mha": "attention_type",
                 "mqa": "attention_type", "gqa": "attention_type", "group_size": "num_generations",
                 "cliprange": "clip_range", "lam": "gae_lambda", "minimal": "lora_preset.minimal",
                 "attention_only": "lora_preset.attention_only", "ffn_only": "lora_preset.ffn_only",
                 "custom": "lora_preset.custom", "epochs": "num_train_epochs", "nesterov": "muon_nesterov"}


@pytest.mark.parametrize("name", ISSUE_NAMES)
def test_every_knob_of_the_issue_has_an_entry(name):
    assert get(name).name == name


@pytest.mark.parametrize("alias,name", sorted(ISSUE_ALIASES.items()))
def test_issue_wording_reaches_the_entry(alias, name):
    assert get(alias).name == name
    assert get(alias.upper()).name == name


@pytest.mark.parametrize("scheduler", [s.value for s in SchedulerType])
def test_every_transformers_scheduler_has_an_entry(scheduler):
    """Generated from the installed SchedulerType, so a new scheduler in transformers fails here first."""
    entry = get(f"scheduler.{scheduler}")
    assert entry.live == "lr_curve"
    assert scheduler in get("lr_scheduler_type").what


@pytest.mark.parametrize("preset", list(LORA_PRESETS))
def test_every_training_preset_has_an_entry(preset):
    assert get(f"lora_preset.{preset}").live == "trainable_params"


@pytest.mark.parametrize("entry", entries(), ids=lambda e: e.name)
def test_every_entry_renders_with_all_fields(entry):
    assert entry.group in GROUPS
    assert entry.title.strip()
    for field, text in entry.text_fields.items():
        assert text.strip(), f"{entry.name}.{field} is empty"
    md = render_markdown(entry)
    for text in (entry.title, entry.name, entry.what, entry.too_low, entry.too_high, entry.default, entry.why,
                 entry.how_to_tune):
        assert text in md
    if entry.live is not None:
        assert entry.live in LIVE_CALCULATORS
        assert callable(getattr(calculators, entry.live))
        assert f"lab.explain.calculators.{entry.live}" in md


def test_every_group_and_every_calculator_is_used():
    assert {e.group for e in entries()} == set(GROUPS)
    assert {e.live for e in entries()} - {None} == set(LIVE_CALCULATORS)
    assert all(e.group == "optimizer" for e in entries("optimizer"))
    with pytest.raises(ValueError, match="group must be one of"):
        entries("nonsense")


def test_unknown_name_raises_keyerror_with_suggestions():
    with pytest.raises(KeyError, match="lora_alpha") as err:
        get("lora_alfa")
    assert "did you mean" in str(err.value)
    with pytest.raises(KeyError, match="warmup_steps"):
        get("warmup_step")
    with pytest.raises(KeyError, match="search"):
        get("zzzzqqqq")


def test_search_ranks_name_hits_first_and_needs_every_word():
    hits = search("warmup")
    assert hits[0].name in ("warmup_steps", "warmup")
    assert {"warmup_steps", "warmup_ratio", "scheduler.warmup_stable_decay"} <= {e.name for e in hits}
    assert search("rank")[0].name == "r"
    both = search("kv cache")
    assert both and all("kv" in render_markdown(e).lower() and "cache" in render_markdown(e).lower() for e in both)
    assert search("no-such-word-anywhere") == []
    assert len(search("")) == len(entries())


def test_sources_known_to_be_wrong_are_corrected():
    """The glossary mis-describes GRPO and the manual inverts DPO's beta; the catalog must not."""
    grpo = get("num_generations").what.lower()
    assert "no value model" in grpo and "mean" in grpo
    beta = get("dpo_beta")
    assert "larger beta keeps the policy closer to the reference" in beta.what.lower()
    assert "barely moves" in beta.too_high
