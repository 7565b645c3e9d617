"""The training benchmark runs the lab job and a plain TRL script on the same tiny config."""

from __future__ import annotations

import pytest

from lab.bench.train import bench_config, bench_train, differences, packing_note, tokens_per_s


def test_tokens_per_s_leaves_out_the_setup_step():
    rows = [{"num_tokens": 100, "time": 10.0}, {"num_tokens": 300, "time": 12.0}, {"num_tokens": 500, "time": 14.0}]
    assert tokens_per_s(rows) == 400 / 4.0
    assert tokens_per_s(rows[:1]) is None


def test_bench_config_keeps_the_preset_but_shortens_it():
    cfg = bench_config("some/model", 5, packing=True)
    assert (cfg.max_steps, cfg.packing, cfg.model_id, cfg.eval_dataset) == (5, True, "some/model", None)
    with pytest.raises(ValueError, match="steps"):
        bench_train("x", steps=2)


@pytest.mark.slow
def test_bench_train_on_the_tiny_model(tiny_model_dir):
    result = bench_train(str(tiny_model_dir), steps=3)
    for key in ("lab_tokens_per_s", "trl_tokens_per_s", "packing_tokens_per_s", "no_packing_tokens_per_s"):
        assert result[key] and result[key] > 0, result
    assert result["ratio"] == pytest.approx(result["lab_tokens_per_s"] / result["trl_tokens_per_s"], rel=0.01)
    assert result["args_equal"] is True  # the bench raises before printing when the two runs would differ
    assert all(mb > 0 for mb in result["peak_rss_mb"].values()) and result["packing_note"]
    assert result["bf16"] is False and result["model_dtype"] == "float32"  # a CPU run: no bf16 autocast


def effective(**args):
    return {"args": {"bf16": False, "learning_rate": 1e-3, "output_dir": "/a", **args},
            "model_dtype": "float32", "attn_implementation": "sdpa"}


def test_differences_ignore_bookkeeping_and_catch_a_training_setting():
    assert differences(effective(), effective(output_dir="/b", save_strategy="no")) == {}
    assert differences(effective(), effective(bf16=True)) == {"bf16": [False, True]}
    other_kernel = {**effective(), "attn_implementation": "eager"}
    assert differences(effective(), other_kernel) == {"attn_implementation": ["sdpa", "eager"]}


# TRL 1.16's SFT and GRPO configs default gradient_checkpointing=True, a name transformers 5 deprecates: the
# warning is TRL's default, not a call of ours (the lab passes activation_checkpointing).
@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_trl_defaults_differ_from_the_lab_on_a_cpu(tmp_path):
    """What the bench guards against: an SFTConfig left at TRL's defaults trains in bf16 with fused AdamW."""
    from trl import SFTConfig
    plain = SFTConfig(output_dir=str(tmp_path), use_cpu=True)
    lab = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, optim="adamw_torch")
    found = differences({"args": plain.to_dict()}, {"args": lab.to_dict()})
    assert found["bf16"] == [True, False] and "optim" in found


def test_the_packing_note_gives_the_measured_reason():
    args = {"args": {"per_device_train_batch_size": 8, "max_length": 256}, "attn_implementation": "sdpa"}
    note = packing_note(50.0, 60.0, 7000.0, 2000.0, args)
    assert "2048 tokens" in note and "sdpa" in note and "50.0 tokens/s" in note
    assert packing_note(90.0, 60.0, 2000.0, 2000.0, args).startswith("packing paid")
