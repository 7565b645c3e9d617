"""Suggested sweeps follow their own entries' advice: each grid's controlled variables are read from its plan
(equal examples and tokens where a step holds a different amount of data, equal LoRA scale where a tie holds it,
nothing but the knob changing otherwise), and grids whose points would be identical jobs are refused."""

from __future__ import annotations

import json
import shutil

import pytest

from lab.core.access import load_yaml_file
from lab.explain.catalog import get
from lab.explain.sweeps import (
    RULE_FOR_KNOB,
    RULES,
    SUGGESTED_GRIDS,
    SweepConfig,
    decide,
    effective_settings,
    fill_packing,
    plan_sweep,
    suggest,
    token_profile,
)
from lab.explain.sweeps.config import PRESETS_DIR
from lab.explain.sweeps.run import _row
from lab.training.configs import config_from_dict

REFUSED = {"use_rslora", "bias"}  # on the tiny Llama: rsLoRA at matched gain, biases it does not have


@pytest.fixture(scope="module")
def base(tiny_model_dir) -> dict:
    """The suggested sweeps' preset with the tiny Llama in place of the embedded model."""
    return load_yaml_file(PRESETS_DIR / "sft_lora_qa.yaml") | {"model_id": str(tiny_model_dir)}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _differing(points, key=lambda cfg: effective_settings(cfg)) -> set[str]:
    settings = [key(p.config) for p in points]
    return {k for k in settings[0] if any(s[k] != settings[0][k] for s in settings)}


@pytest.mark.parametrize("knob", sorted(set(SUGGESTED_GRIDS) - REFUSED))
def test_every_suggested_grid_changes_only_its_knob_and_what_its_budget_derives(knob, base, models_dir):
    sweep = suggest(knob, models_dir, base)
    tied = set(SUGGESTED_GRIDS[knob].get("tie", {}))
    derived = {"max_steps", "eval_steps", "save_steps"} if sweep.budget == "examples" else set()
    assert _differing(sweep.points()) <= {knob, "lora_scale", "warmup_steps", *tied, *derived}
    assert knob in _differing(sweep.points(), key=lambda cfg: vars(cfg))


@pytest.mark.parametrize("knob", [k for k, spec in SUGGESTED_GRIDS.items() if spec.get("budget") == "examples"])
def test_budget_grids_give_every_point_the_same_examples_and_tokens(knob, base, models_dir):
    """Packing and accumulation change how much data one step holds, so the plan scales max_steps: every point
    sees the base's examples and tokens, up to half a step of rounding, and is evaluated once at its end."""
    sweep = suggest(knob, models_dir, base)
    plan = plan_sweep(sweep, models_dir)
    first = plan[0]
    assert len({p.max_steps for p in plan}) == len(plan)  # equal steps would be the confound
    for p, point in zip(plan, sweep.points()):
        half_step = p.examples / p.max_steps / 2
        assert abs(p.examples - first.examples) <= half_step + 1e-9, p.point
        assert abs(p.tokens - first.tokens) <= half_step * token_profile(point.config, models_dir).tokens_per_row + 1
        assert point.config.eval_steps == point.config.max_steps == p.max_steps
    assert "equal token budget" in get(knob).how_to_tune or "fixed token budget" in get(knob).how_to_tune


def test_packing_plan_uses_trl_packing_of_the_real_data(base, models_dir):
    sweep = suggest("packing", models_dir, base)
    profile = token_profile(sweep.points()[0].config, models_dir)
    assert profile.packed_rows < profile.rows  # short QA rows: several per packed row
    assert sweep.examples_per_packed_row == pytest.approx(profile.rows / profile.packed_rows)
    unpacked, packed = plan_sweep(sweep, models_dir)
    assert packed.max_steps < unpacked.max_steps


def test_rank_sweep_holds_the_lora_scale_that_peft_applies(base, models_dir):
    plan = plan_sweep(suggest("r", models_dir, base), models_dir)
    assert len({p.lora_scale for p in plan}) == 1 and len({p.overrides["r"] for p in plan}) == 3


def test_rslora_at_matched_gain_is_refused_because_peft_computes_the_same_thing(base, models_dir):
    """The entry advises comparing rsLoRA at matched gain; peft multiplies the adapter by one number (alpha/r or
    alpha/sqrt(r)), so at matched gain both points are one computation, and the sweep says so instead of running."""
    with pytest.raises(ValueError, match="train the same model") as err:
        suggest("use_rslora", models_dir, base)
    assert "use_rslora" in str(err.value) and "2" in str(err.value)
    # Matched gain while the rank moves is a real sweep: every point at peft's scale 2.
    ranks = SweepConfig(name="rs-rank", base=base, grid={"r": [4, 16, 64]}, tie={"lora_alpha": "gain 2"},
                        overrides={"use_rslora": True, "max_steps": 4})
    assert [p.lora_scale for p in plan_sweep(ranks)] == pytest.approx([2.0, 2.0, 2.0])
    assert [p.config.lora_alpha for p in ranks.points()] == pytest.approx([4.0, 8.0, 16.0])
    assert "matched gain" in get("use_rslora").how_to_tune or "equal gain" in get("use_rslora").how_to_tune


def test_bias_sweep_is_refused_on_a_model_without_biases_and_runs_on_one_with_them(base, models_dir,
                                                                                 tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="same parameters"):
        suggest("bias", models_dir, base)
    biased = tmp_path / "biased"
    shutil.copytree(tiny_model_dir, biased)
    config = json.loads((biased / "config.json").read_text())
    (biased / "config.json").write_text(json.dumps(config | {"attention_bias": True}))
    sweep = suggest("bias", models_dir, base | {"model_id": str(biased)})
    assert len(sweep.points()) == 3


def test_a_warmup_grid_whose_shares_round_to_the_same_steps_is_refused(base):
    with pytest.raises(ValueError, match="warmups come to 1 steps"):
        SweepConfig(name="w", base=base, grid={"warmup_ratio": [0.01, 0.02]}, overrides={"max_steps": 20})


def test_budget_with_packing_needs_the_measured_ratio_and_the_engine_fills_it(base, models_dir):
    data = dict(name="p", base=base, grid={"packing": [False, True]}, budget="examples", overrides={"max_steps": 8})
    with pytest.raises(ValueError, match="examples_per_packed_row"):
        SweepConfig(**data)
    filled = fill_packing(data, models_dir)
    cfg = config_from_dict(base | {"max_steps": 8}, "t")
    assert filled["examples_per_packed_row"] == pytest.approx(token_profile(cfg, models_dir).examples_per_packed_row)
    assert len(SweepConfig(**filled).points()) == 2


# ---- decision rules -------------------------------------------------------------------------------------------
def _rows(values, losses, spiked=(), diverged=()):
    return [{"point": f"warmup_ratio={v}", "values": {"warmup_ratio": v}, "state": "completed",
             "final_eval_loss": loss, "spiked": v in spiked, "diverged": v in diverged}
            for v, loss in zip(values, losses)]


def test_warmup_is_decided_by_the_smallest_stable_value():
    assert RULE_FOR_KNOB["warmup_ratio"] == RULE_FOR_KNOB["warmup_steps"] == "smallest_stable"
    d = decide(_rows([0.0, 0.05, 0.1], [0.9, 1.0, 1.0], spiked=(0.0,)), knob="warmup_ratio")
    assert d.choice == "warmup_ratio=0.05" and d.rule == "smallest_stable"
    assert "warmup_ratio=0" in d.explanation and "Unstable start" in d.explanation
    # A larger stable value that is better beyond the tolerance is named, not hidden.
    d = decide(_rows([0.0, 0.05, 0.1], [1.2, 1.2, 1.0]), knob="warmup_ratio")
    assert d.choice == "warmup_ratio=0.0" and "beyond the 1% tolerance" in d.explanation


def test_a_training_loss_that_rises_far_above_its_start_is_a_spike():
    record = {"label": "p", "values": {"warmup_ratio": 0.0}, "index": 0, "job_id": "j"}
    metrics = [{"loss": 2.0}, {"loss": 3.0}, {"loss": 1.0}]
    assert _row(record, {"state": "completed"}, metrics, {})["spiked"] is True
    assert _row(record, {"state": "completed"}, [{"loss": 2.0}, {"loss": 2.2}, {"loss": 1.0}], {})["spiked"] is False


def test_the_learning_rate_tie_break_is_labelled_as_the_labs_own():
    assert "guide's" not in RULES["largest_stable"] and "lab's own" in RULES["largest_stable"]
