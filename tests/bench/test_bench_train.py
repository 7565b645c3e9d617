"""The training benchmark runs the lab job and a plain TRL script on the same tiny config."""

from __future__ import annotations

import pytest

from lab.bench.train import bench_config, bench_train, tokens_per_s


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
