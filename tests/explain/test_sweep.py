"""Sweeps: a 2-point LoRA rank sweep end to end on the tiny Llama through real job subprocesses, the
decision rules on hand-made rows, resume after a restart, bad input, CSV, and the sweep/explain CLI.

The end-to-end sweep (module fixture) runs two 2-step jobs one after the other; most of its time is
starting two `accelerate launch` processes. Everything else reads its folders or uses no process.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from lab.core.settings import REPO_ROOT
from lab.explain.sweeps import (
    RESULT_FIELDS,
    RULES,
    Decision,
    SweepConfig,
    decide,
    export_csv,
    list_sweeps,
    load_sweep_file,
    overlay_curves,
    resume_sweep,
    run_sweep,
    start_sweep,
    suggest_sweep,
    sweep_decision,
    sweep_dir,
    sweep_results,
)
from lab.training.configs import load_config
from lab.training.jobs.runner import ACTIVE_STATES, JobRunner, create_job, kill_job, list_jobs, resume_job
from lab.training.jobs.status import read_status, update_status
from support import write_qa_file


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    return write_qa_file(tmp_path_factory.mktemp("sweep-qa") / "qa.jsonl", 6)


def tiny_base(model_dir: Path, data: Path, **overrides) -> dict:
    base = dict(kind="sft", model_id=str(model_dir), datasets=[{"path": str(data), "format": "qa"}],
                eval_dataset={"path": str(data), "format": "qa"}, max_steps=2, per_device_train_batch_size=2,
                learning_rate=1e-2, max_length=32, eval_steps=2, save_steps=2, logging_steps=1, lora_preset="minimal")
    return base | overrides


def tiny_sweep(model_dir: Path, data: Path, **fields) -> SweepConfig:
    return SweepConfig(**(dict(name="tiny-rank", base=tiny_base(model_dir, data), grid={"r": [2, 4]},
                               tie={"lora_alpha": "2*r"}) | fields))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, qa_file):
    """A 2-point rank sweep run to the end: real JobRunner subprocesses, then the QA metric through the engine."""
    from lab.core.device import choose_device
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    data_dir = tmp_path_factory.mktemp("sweep-data")
    settings = LabSettings(data_dir=data_dir, model_id=str(tiny_model_dir), memory_budget_gb=1.0, load_in_4bit=False,
                           auth="")
    engine = Engine(settings, device=choose_device(has_cuda=False, has_flash_attn=False))
    sweep = tiny_sweep(tiny_model_dir, qa_file, eval_qa=str(qa_file), eval_qa_limit=1)
    runner = JobRunner(data_dir)
    started = time.perf_counter()
    try:
        report = run_sweep(sweep, data_dir, runner, engine.runtime, timeout_s=300)
    finally:
        for job in list_jobs(data_dir):
            if job["state"] in ACTIVE_STATES:
                kill_job(data_dir, job["id"], grace_s=5)
    print(f"\n2-point sweep end to end: {time.perf_counter() - started:.1f} s")
    return data_dir, report


def test_two_point_sweep_runs_end_to_end(finished):
    data_dir, report = finished
    rows = report.rows
    assert [r["point"] for r in rows] == ["r=2, lora_alpha=4", "r=4, lora_alpha=8"]
    for row in rows:
        assert row["state"] == "completed", row["message"]
        for key in ("final_train_loss", "best_eval_loss", "final_eval_loss", "tokens_per_s", "peak_memory_mb"):
            assert isinstance(row[key], float) and row[key] > 0, (key, row[key])
        assert 0.0 <= row["qa_f1"] <= 1.0 and row["diverged"] in (True, False)
    # LoRA parameters grow linearly with r: rank 4 trains exactly twice as many as rank 2.
    assert rows[1]["trainable_params"] == 2 * rows[0]["trainable_params"] > 0
    # Each job got its point's config, alpha held at 2r, and the sweep folder maps point -> job.
    folder = sweep_dir(data_dir, report.sweep_id)
    points = json.loads((folder / "points.json").read_text())["points"]
    assert [p["job_id"] for p in points] == [r["job_id"] for r in rows]
    for row in rows:
        cfg = load_config(data_dir / "jobs" / row["job_id"] / "config.yaml")
        assert (cfg.r, cfg.lora_alpha) == (row["r"], row["lora_alpha"]) == (row["r"], 2 * row["r"])
    assert (folder / "sweep.yaml").is_file() and set(json.loads((folder / "qa.json").read_text())) == {
        r["job_id"] for r in rows}
    assert list_sweeps(data_dir)[0] | {"states": None} == {"id": report.sweep_id, "name": "tiny-rank", "knob": "r",
                                                          "points": 2, "states": None, "done": True}


def test_the_rank_rule_picks_as_stated(finished):
    data_dir, report = finished
    rows = report.rows
    # Stated rule: the smallest r whose final eval loss is within 1% of the best one.
    best = min(r["final_eval_loss"] for r in rows)
    expected = min((r for r in rows if r["final_eval_loss"] <= best * 1.01), key=lambda r: r["r"])
    assert report.decision.rule == "smallest_best" and report.decision.metric == "eval_loss"
    assert report.decision.choice == expected["point"] and report.decision.values["r"] == expected["r"]
    assert "smallest" in report.decision.explanation and "within 1%" in report.decision.explanation.lower()
    assert sweep_decision(report.sweep_id, data_dir) == report.decision


def test_overlay_curves_have_a_line_per_point(finished):
    data_dir, report = finished
    curves = overlay_curves(report.sweep_id, data_dir)
    for row in report.rows:
        mine = [c for c in curves if c["point"] == row["point"]]
        assert [c["step"] for c in mine if c["loss"] is not None] == [1, 2]
        assert [c["step"] for c in mine if c["eval_loss"] is not None] == [2]


def test_resume_with_a_fresh_runner_keeps_finished_points(finished):
    data_dir, report = finished
    jobs_before = sorted(p.name for p in (data_dir / "jobs").iterdir())
    actions = resume_sweep(report.sweep_id, data_dir, JobRunner(data_dir))  # as after a restart of the app
    assert set(actions.values()) == {"kept (completed)"}
    assert sorted(p.name for p in (data_dir / "jobs").iterdir()) == jobs_before
    assert [r["job_id"] for r in sweep_results(report.sweep_id, data_dir)] == [r["job_id"] for r in report.rows]


def test_export_csv_columns(finished, tmp_path):
    data_dir, report = finished
    path = export_csv(report.rows, tmp_path / "out" / "rank.csv")
    with path.open() as handle:
        reader = csv.DictReader(handle)
        lines = list(reader)
    assert reader.fieldnames == ["point", "r", "lora_alpha", *RESULT_FIELDS[1:]]
    assert [line["r"] for line in lines] == ["2", "4"] and all(line["state"] == "completed" for line in lines)
    assert "values" not in reader.fieldnames and float(lines[0]["peak_memory_mb"]) > 0


def test_cli_resume_prints_the_table_and_writes_csv(finished, tmp_path, capsys, monkeypatch):
    from lab.cli import main as lab_main
    data_dir, report = finished
    monkeypatch.setenv("LAB_DATA_DIR", str(data_dir))
    out = tmp_path / "cli.csv"
    assert lab_main(["sweep", "--resume", report.sweep_id, "--csv", str(out)]) == 0
    captured = capsys.readouterr()
    assert "r=2, lora_alpha=4" in captured.out and f"Decision: {report.decision.choice}" in captured.out
    assert "kept (completed)" in captured.err and out.is_file()
    assert lab_main(["sweep", "--resume", "no-such-sweep"]) == 2
    assert "no sweep 'no-such-sweep'" in capsys.readouterr().err


# ---- resume decisions without training (jobs stay queued: this runner never starts a process) ---------------
class QueueOnlyRunner:
    """The runner calls resume_sweep makes, recorded, with jobs created on disk but never started."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir, self.submitted, self.resumed = data_dir, [], []

    def submit(self, cfg, owner: str = "local") -> str:
        job_id = create_job(cfg, self.data_dir, owner=owner)
        self.submitted.append(job_id)
        return job_id

    def resume(self, job_id: str) -> dict:
        self.resumed.append(job_id)
        return resume_job(self.data_dir, job_id)


def test_resume_resubmits_only_what_never_trained(tmp_path, tiny_model_dir, qa_file):
    data_dir = tmp_path / "data"
    sweep = tiny_sweep(tiny_model_dir, qa_file, grid={"r": [1, 2, 3, 4, 5]})
    first = QueueOnlyRunner(data_dir)
    sweep_id = start_sweep(sweep, data_dir, first)
    done, before_start, mid_run, lost, running = first.submitted
    jobs = data_dir / "jobs"
    update_status(jobs / done, state="completed", step=2)
    update_status(jobs / before_start, state="failed", step=0, message="waiting for memory")
    update_status(jobs / mid_run, state="failed", step=1, message="killed")
    # A crash between creating a job and recording it: points.json lost the id, the job still exists.
    points_file = sweep_dir(data_dir, sweep_id) / "points.json"
    points = json.loads(points_file.read_text())
    points["points"][3]["job_id"] = None
    points_file.write_text(json.dumps(points))
    again = QueueOnlyRunner(data_dir)
    actions = resume_sweep(sweep_id, data_dir, again)
    assert list(actions.values()) == ["kept (completed)", "resubmitted (failed before training)",
                                      "resumed (failed at step 1)", "attached (queued)", "attached (queued)"]
    assert len(again.submitted) == 1 and again.resumed == [mid_run]
    assert read_status(jobs / mid_run).state == "queued"  # the same job continues, no second one
    rows = sweep_results(sweep_id, data_dir)
    assert [r["job_id"] for r in rows] == [done, again.submitted[0], mid_run, lost, running]
    assert json.loads(points_file.read_text())["points"][1]["replaced"] == [before_start]
    assert len(list(jobs.iterdir())) == 6
    # Resuming again changes nothing: every point has exactly one live job.
    assert resume_sweep(sweep_id, data_dir, QueueOnlyRunner(data_dir))[rows[1]["point"]] == "attached (queued)"
    assert len(list(jobs.iterdir())) == 6


# ---- decide on hand-made rows -------------------------------------------------------------------------------
def row(knob: str, value, eval_loss=None, state="completed", losses=(3.0, 2.0), qa_f1=None, **extra) -> dict:
    return {"point": f"{knob}={value}", "values": {knob: value}, "state": state, "final_eval_loss": eval_loss,
            "best_eval_loss": eval_loss, "final_train_loss": losses[-1], "qa_f1": qa_f1,
            "diverged": losses[-1] > losses[0] or any(v != v for v in losses)} | extra


def test_rank_rule_prefers_the_smaller_rank_within_tolerance():
    rows = [row("r", 8, 1.005), row("r", 16, 1.000), row("r", 32, 1.001)]
    decision = decide(rows, "auto", tolerance=0.01)
    assert isinstance(decision, Decision) and decision.rule == "smallest_best"
    assert decision.choice == "r=8" and decision.values == {"r": 8}
    assert "r=8 (1.005)" in decision.explanation and "at most 1.01" in decision.explanation
    assert decide(rows, "auto", tolerance=0.001).choice == "r=16"  # 0.5% worse is outside a 0.1% tolerance


def test_rank_rule_takes_a_larger_rank_when_it_is_clearly_better():
    rows = [row("r", 8, 1.30), row("r", 16, 1.00), row("r", 32, 0.995), row("r", 64, state="failed")]
    decision = decide(rows, "smallest_best")
    assert decision.choice == "r=16"
    assert "r=64" in decision.explanation and "not compared" in decision.explanation


def test_rank_rule_on_qa_f1_where_higher_is_better():
    rows = [row("r", 8, 1.0, qa_f1=0.50), row("r", 16, 1.0, qa_f1=0.60), row("r", 32, 1.0, qa_f1=0.598)]
    decision = decide(rows, "smallest_best", metric="qa_f1", tolerance=0.01)
    assert decision.choice == "r=16" and decision.metric == "qa_f1" and "at least" in decision.explanation


def test_learning_rate_rule_takes_the_largest_stable_rate():
    rows = [row("learning_rate", 1e-4, 1.20), row("learning_rate", 2e-4, 1.000),
            row("learning_rate", 4e-4, 1.004), row("learning_rate", 8e-4, 0.90, losses=(3.0, 5.0))]
    decision = decide(rows, "auto")
    assert decision.rule == "largest_stable"
    # 8e-4 ended above its starting loss (diverged) despite the lowest eval loss; 4e-4 is within 1% of 2e-4.
    assert decision.choice == "learning_rate=0.0004"
    assert "Diverged" in decision.explanation and "learning_rate=0.0008" in decision.explanation
    assert decide(rows[:3], "largest_stable", tolerance=0.001).choice == "learning_rate=0.0002"


def test_generic_rule_takes_the_lowest_eval_loss_and_names_ties():
    rows = [row("lora_dropout", 0.0, 1.10), row("lora_dropout", 0.05, 1.002), row("lora_dropout", 0.1, 1.000)]
    decision = decide(rows)
    assert decision.rule == "lowest_eval_loss" and decision.choice == "lora_dropout=0.1"
    assert "tie" in decision.explanation and "lora_dropout=0.05" in decision.explanation


def test_decide_without_comparable_runs_or_eval_data():
    assert decide([row("r", 8, state="running"), row("r", 16, state="failed")]).choice is None
    no_eval = decide([row("r", 8, losses=(3.0, 2.0)), row("r", 16, losses=(3.0, 1.0))])
    assert no_eval.metric == "train_loss" and no_eval.choice == "r=16" and "memorising" in no_eval.explanation
    with pytest.raises(ValueError, match="rule must be"):
        decide([row("r", 8, 1.0)], "best_guess")
    assert set(RULES) == {"smallest_best", "largest_stable", "smallest_stable", "lowest_eval_loss"}


# ---- configs and bad input ----------------------------------------------------------------------------------
def test_points_tie_alpha_to_rank_as_a_ratio(tiny_model_dir, qa_file):
    points = tiny_sweep(tiny_model_dir, qa_file, grid={"r": [2, 4], "learning_rate": [1e-3, 2e-3]},
                        tie={"lora_alpha": "0.5 * r", "lora_dropout": 0.0}).points()
    assert [p.label for p in points][:2] == ["r=2, learning_rate=0.001, lora_alpha=1, lora_dropout=0",
                                             "r=2, learning_rate=0.002, lora_alpha=1, lora_dropout=0"]
    assert [(p.config.r, p.config.lora_alpha, p.config.learning_rate) for p in points] == [
        (2, 1.0, 1e-3), (2, 1.0, 2e-3), (4, 2.0, 1e-3), (4, 2.0, 2e-3)]


def test_bundled_rank_sweep_loads():
    sweep = load_sweep_file(REPO_ROOT / "assets/sweeps/lora_rank.yaml")
    preset = load_config(REPO_ROOT / "assets/presets/sft_lora_qa.yaml")
    points = sweep.points()
    assert [(p.config.r, p.config.lora_alpha) for p in points] == [(8, 16), (16, 32), (32, 64)]
    assert all(p.config.max_steps == 20 and p.config.datasets == preset.datasets for p in points)
    assert sweep.rule == "smallest_best" and sweep.eval_qa
    assert [p.label for p in suggest_sweep("r").points()] == [p.label for p in points]
    with pytest.raises(KeyError, match="no suggested sweep"):
        suggest_sweep("dtype")


@pytest.mark.parametrize("fields, message", [
    ({"grid": {}}, "grid is empty"),
    ({"grid": {"r": []}}, "grid.r needs a non-empty list"),
    ({"grid": {"rank": [8]}}, "unknown knob 'rank'.*did you mean r"),
    ({"grid": {"r": [0]}}, r"grid value r=0 makes the job config invalid: r "),
    ({"grid": {"r": [8, 16], "learning_rate": [1e-3, -1.0]}}, "grid value learning_rate=-1.0 makes"),
    ({"grid": {"r": [8, "big"]}}, "orders the values of r"),
    ({"grid": {"kind": ["dpo"]}}, "knob 'kind' cannot be set"),
    ({"tie": {"lora_alpha": "__import__('os').system('x')"}}, "is not '<number>\\*<knob>'"),
    ({"tie": {"lora_alpha": "2*rank"}}, "unknown knob 'rank'"),
    ({"tie": {"r": "2*lora_alpha"}}, "r is already in the grid"),
    ({"overrides": {"max_stepz": 3}}, "overrides: unknown knob 'max_stepz'"),
    ({"decision": "best"}, "decision must be"),
    ({"metric": "qa_f1"}, "metric qa_f1 needs eval_qa"),
    ({"name": "../up"}, "name '../up' is not allowed: use"),
])
def test_bad_sweeps_name_the_problem(tiny_model_dir, qa_file, tmp_path, fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_sweep(tiny_model_dir, qa_file, **fields)
    # Nothing was written or launched: validation builds every point's config before any job exists.
    assert not (tmp_path / "data").exists()


def test_sweep_file_with_unknown_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nbase: assets/presets/sft_lora_qa.yaml\ngrid: {r: [8]}\ngird: {}\n")
    with pytest.raises(ValueError, match="unknown key 'gird'"):
        load_sweep_file(path)


def test_explain_prints_an_entry_and_fails_clearly(capsys, tmp_path, monkeypatch):
    from lab.cli import main as lab_main
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    assert lab_main(["explain", "lora_alpha"]) == 0
    out = capsys.readouterr().out
    assert "`lora_alpha`" in out and "**How to tune.**" in out
    assert lab_main(["explain", "lora_alpah"]) == 2
    err = capsys.readouterr().err
    assert "no catalog entry named 'lora_alpah'" in err and "did you mean lora_alpha" in err
