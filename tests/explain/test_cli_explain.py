"""The command line in context: `explain NAME --trainer KIND` opens that trainer's entry, a bare ambiguous name
lists its meanings, and `sweep ... --plan --json` prints the planned points without starting a job."""

from __future__ import annotations

import json

import yaml

from lab.cli import main
from lab.core.access import load_yaml_file
from lab.explain.sweeps.config import PRESETS_DIR


def test_explain_with_a_trainer_opens_that_trainers_entry(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    assert main(["explain", "beta", "--trainer", "grpo"]) == 0
    out = capsys.readouterr().out
    assert "GRPO KL coefficient" in out and "DPO beta" not in out
    assert main(["explain", "kl_coef", "--trainer", "ppo"]) == 0
    assert "PPO KL penalty" in capsys.readouterr().out
    assert main(["explain", "beta"]) == 0  # ambiguous: both meanings, each named with its trainer
    out = capsys.readouterr().out
    assert "**dpo**" in out and "**grpo**" in out


def test_sweep_plan_prints_points_and_runs_nothing(tmp_path, monkeypatch, capsys, tiny_model_dir):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    base = load_yaml_file(PRESETS_DIR / "sft_lora_qa.yaml") | {"model_id": str(tiny_model_dir)}
    sweep = tmp_path / "accum.yaml"
    sweep.write_text(yaml.safe_dump({"name": "accum", "base": base, "grid": {"gradient_accumulation_steps": [1, 2]},
                                     "budget": "examples", "overrides": {"max_steps": 8}}))
    assert main(["sweep", str(sweep), "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [p["max_steps"] for p in plan] == [8, 4]
    assert plan[0]["examples"] == plan[1]["examples"] and plan[0]["tokens"] == plan[1]["tokens"]
    assert plan[0]["lora_scale"] == plan[1]["lora_scale"]
    assert not (tmp_path / "data" / "jobs").exists() or not any((tmp_path / "data" / "jobs").iterdir())
