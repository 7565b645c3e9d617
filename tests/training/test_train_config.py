"""Training configs: every preset loads, bad values name their field, YAML round-trips, docs exist."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from transformers.trainer_utils import SchedulerType
from transformers.training_args import OptimizerNames

from lab.core.settings import REPO_ROOT
from lab.training.configs import CONFIG_KINDS, load_config
from lab.training.configs.base import OPTIMIZERS, SCHEDULERS, TrainConfig, field_docs, save_config
from lab.training.configs.sft import SftConfig

PRESETS = sorted((REPO_ROOT / "assets" / "presets").glob("*.yaml"))
QA = {"path": "assets/knowledge/qa.jsonl", "format": "qa"}


def sft(**overrides) -> SftConfig:
    return SftConfig(**({"datasets": [QA]} | overrides))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_loads_and_its_data_exists(preset: Path):
    cfg = load_config(preset)
    assert cfg.kind in CONFIG_KINDS
    for spec in cfg.datasets + ([cfg.eval_dataset] if cfg.eval_dataset else []):
        assert spec.resolved.is_file(), f"{preset.name}: {spec.path} is missing"


def test_the_three_sft_presets_are_shipped():
    assert {"sft_lora_qa", "sft_qlora_qa", "sft_full_tiny"} <= {p.stem for p in PRESETS}
    assert load_config(REPO_ROOT / "assets/presets/sft_qlora_qa.yaml").mode == "qlora"
    assert load_config(REPO_ROOT / "assets/presets/sft_full_tiny.yaml").mode == "full"


@pytest.mark.parametrize("field_name, value", [
    ("r", 0), ("r", -4), ("lora_alpha", 0), ("lora_alpha", -1.0), ("learning_rate", 0), ("learning_rate", -1e-4),
    ("per_device_train_batch_size", 0), ("gradient_accumulation_steps", 0), ("max_length", 0),
    ("lora_dropout", 1.0), ("max_steps", 0), ("num_train_epochs", 0), ("warmup_ratio", 1.5),
    ("weight_decay", -0.1), ("mode", "half"), ("lora_preset", "everything"), ("bias", "some"),
    ("lr_scheduler_type", "sawtooth"), ("optim", "nonexistent_optimizer"), ("init_lora_weights", "random"),
    ("output_name", "../escape"), ("accelerate_config", "no_such_config"), ("eval_fraction", 1.0),
])
def test_bad_value_names_the_field(field_name, value):
    with pytest.raises(ValueError, match=field_name):
        sft(**{field_name: value})


def test_cross_field_rules_name_the_field():
    with pytest.raises(ValueError, match="target_modules"):
        sft(lora_preset="custom")
    with pytest.raises(ValueError, match="keep_best_checkpoint"):
        sft(keep_best_checkpoint=True)
    with pytest.raises(ValueError, match="save_steps"):
        sft(keep_best_checkpoint=True, eval_fraction=0.1, eval_steps=20, save_steps=30)
    with pytest.raises(ValueError, match="warmup_ratio"):
        sft(warmup_steps=5, warmup_ratio=0.1)
    with pytest.raises(ValueError, match="optim"):
        sft(mode="full", optim="muon")
    with pytest.raises(ValueError, match="init_lora_weights"):
        sft(mode="qlora", init_lora_weights="loftq")
    with pytest.raises(ValueError, match="datasets"):
        SftConfig(datasets=[])
    with pytest.raises(ValueError, match="weight"):
        sft(datasets=[QA | {"weight": 0}])
    with pytest.raises(ValueError, match="format"):
        sft(datasets=[QA | {"format": "csv"}])


def test_unavailable_optimizer_says_why():
    with pytest.raises(ValueError, match="torchao"):
        sft(optim="adamw_torch_8bit")


def test_yaml_round_trip(tmp_path):
    cfg = sft(mode="qlora", lora_preset="custom", target_modules=["q_proj", "up_proj"], r=8, lora_alpha=16,
              use_rslora=True, lr_scheduler_type="cosine_with_restarts", lr_scheduler_kwargs={"num_cycles": 2},
              eval_dataset={"path": "assets/knowledge/qa_heldout.jsonl", "format": "qa"}, optim="adamw_8bit",
              accelerate_config="ddp_cpu_2proc", packing=True, completion_only_loss=False)
    path = save_config(cfg, tmp_path / "job" / "config.yaml")
    assert load_config(path) == cfg


def test_unknown_key_and_kind_are_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: sft\ndatasets: [{path: a.jsonl}]\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        load_config(path)
    path.write_text("kind: sft\ndatasets: [{path: a.jsonl, wieght: 2}]\n")
    with pytest.raises(ValueError, match="wieght"):
        load_config(path)
    path.write_text("kind: distill\ndatasets: [{path: a.jsonl}]\n")
    with pytest.raises(ValueError, match="kind"):
        load_config(path)


def test_every_field_is_documented_once():
    docs = field_docs(SftConfig)
    missing = [f.name for f in fields(SftConfig) if not docs.get(f.name)]
    assert not missing, f"fields without a docstring: {missing}"
    assert "sqrt(r)" in docs["use_rslora"]


def test_option_lists_match_transformers():
    assert set(SCHEDULERS) == {s.value for s in SchedulerType}
    assert set(OPTIMIZERS) - {"muon"} <= {o.value for o in OptimizerNames}


def test_other_kinds_can_subclass():
    assert issubclass(CONFIG_KINDS["sft"], TrainConfig)


@pytest.mark.parametrize("field_name, value", [
    ("learning_rate", float("inf")), ("learning_rate", float("nan")), ("weight_decay", float("inf")),
    ("max_grad_norm", float("nan")), ("num_train_epochs", float("inf")), ("lora_alpha", float("inf")),
    ("lora_dropout", float("nan")), ("warmup_ratio", float("nan")), ("per_device_train_batch_size", float("inf")),
    ("r", 1025), ("r", 1_000_000), ("per_device_train_batch_size", 4097), ("per_device_train_batch_size", 10**9),
    ("gradient_accumulation_steps", 4097), ("max_length", 131_073),
])
def test_non_finite_and_out_of_bounds_values_name_the_field(field_name, value):
    with pytest.raises(ValueError, match=rf"^{field_name}\b"):
        sft(**{field_name: value})


def test_the_ceilings_themselves_are_accepted():
    cfg = sft(r=1024, per_device_train_batch_size=4096, gradient_accumulation_steps=4096, max_length=131_072)
    assert (cfg.r, cfg.max_length) == (1024, 131_072)


def test_nan_and_inf_inside_lists_and_mappings_name_where(tmp_path):
    with pytest.raises(ValueError, match=r"datasets\[0\]\.weight must be a finite number"):
        sft(datasets=[QA | {"weight": float("nan")}])
    with pytest.raises(ValueError, match=r"lr_scheduler_kwargs\.min_lr must be a finite number"):
        sft(lr_scheduler_kwargs={"min_lr": float("inf")})
    path = tmp_path / "c.yaml"  # YAML spells them .inf and .nan
    path.write_text("kind: sft\ndatasets: [{path: a.jsonl, format: qa, weight: .nan}]\nlearning_rate: .inf\n")
    with pytest.raises(ValueError, match="finite"):
        load_config(path)


@pytest.mark.parametrize("kind, field_name, value", [
    ("grpo", "beta", float("inf")), ("grpo", "temperature", float("nan")), ("grpo", "reward_weights", [float("nan")]),
    ("grpo", "max_completion_length", 10**9), ("ppo", "kl_coef", float("inf")), ("ppo", "vf_coef", float("nan")),
    ("dpo", "beta", float("inf")), ("pretrain", "rope_theta", float("inf")), ("pretrain", "max_seq_len", 10**9),
])
def test_every_kind_refuses_non_finite_and_huge_values(kind, field_name, value):
    formats = {"dpo": "preference", "pretrain": "text"}
    data = {"kind": kind, "datasets": [{"path": "a.jsonl", "format": formats.get(kind, "qa")}], field_name: value}
    from lab.training.configs import config_from_dict
    with pytest.raises(ValueError, match=field_name):
        config_from_dict(data)


def test_an_overlong_model_id_is_refused_like_other_bad_ids():
    with pytest.raises(ValueError, match="model_id"):
        sft(model_id="a" * 5000)
