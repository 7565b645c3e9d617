"""The queue and the devices as the tabs show them: when each queued job starts, and who holds what where.

    python -m pytest -q tests/training/test_queue_view.py

estimated_starts is pure (status dicts in, seconds out); the Engine tests put a job on disk that this test process
runs in the foreground, so it holds a CPU slot without anything training.
"""

from __future__ import annotations

import yaml

from lab.training.jobs.placement import estimated_starts
from lab.training.jobs.runner import create_job
from lab.training.jobs.status import update_status
from support import make_engine, tiny_job_yaml


def running(job_id: str, eta_s: float | None, state: str = "running") -> dict:
    return {"id": job_id, "state": state, "eta_s": eta_s}


def queued(job_id: str, position: int, eta_s: float | None = None) -> dict:
    return {"id": job_id, "state": "queued", "eta_s": eta_s, "queue_position": position}


def test_a_free_slot_starts_the_first_job_now_and_the_next_when_a_running_job_ends():
    jobs = [running("r", 60.0), queued("q1", 1), queued("q2", 2)]
    assert estimated_starts(jobs, slots=2) == {"q1": 0.0, "q2": 60.0}


def test_jobs_start_in_queue_position_order_not_list_order():
    jobs = [queued("late", 2), running("r1", 30.0), running("r2", 90.0), queued("early", 1)]
    assert estimated_starts(jobs, slots=2) == {"early": 30.0, "late": 90.0}


def test_a_job_that_never_ran_makes_the_starts_behind_it_unknown():
    jobs = [running("r", 40.0), queued("q1", 1), queued("q2", 2)]
    assert estimated_starts(jobs, slots=1) == {"q1": 40.0, "q2": None}


def test_a_resumed_job_counts_its_time_left_from_its_last_run():
    jobs = [running("r", 40.0), queued("resumed", 1, eta_s=25.0), queued("q2", 2)]
    assert estimated_starts(jobs, slots=1) == {"resumed": 40.0, "q2": 65.0}


def test_a_running_job_without_an_estimate_yet_is_unknown_and_a_stopping_one_ends_now():
    assert estimated_starts([running("r", None), queued("q", 1)], slots=1) == {"q": None}
    assert estimated_starts([running("r", 500.0, "stopping"), queued("q", 1)], slots=1) == {"q": 0.0}


def test_more_running_jobs_than_slots_wait_until_one_is_spare():
    """A foreground `python -m lab train` holds a slot the runner did not give it."""
    jobs = [running("r1", 10.0), running("r2", 20.0), queued("q", 1)]
    assert estimated_starts(jobs, slots=1) == {"q": 20.0}


def test_no_slots_means_nothing_starts_by_itself():
    assert estimated_starts([queued("q", 1)], slots=0) == {"q": None}


def test_finished_jobs_hold_nothing():
    jobs = [{"id": "done", "state": "completed", "eta_s": 0}, queued("q", 1)]
    assert estimated_starts(jobs, slots=1) == {"q": 0.0}


def engine_with_a_running_job(tmp_path, tiny_model_dir, qa_file):
    """An engine with two CPU slots, one held by alice's job (this process, as if in the foreground, 30 s left),
    and bob's two jobs queued behind it: the runner may run one job at once, so neither starts."""
    engine = make_engine(tmp_path / "data", tiny_model_dir, cpu_job_slots=2)
    engine.jobs.runner.max_running = 1
    cfg = engine.jobs.config_from_dict(yaml.safe_load(tiny_job_yaml(tiny_model_dir, qa_file, "view")))
    busy = create_job(cfg, engine.jobs.runner.data_dir, foreground=True, owner="alice")
    update_status(engine.jobs.runner.data_dir / "jobs" / busy, eta_s=30.0)
    first, second = (engine.jobs.runner.submit(cfg, owner="bob") for _ in range(2))
    return engine, busy, first, second


def test_engine_queue_estimates_count_the_slots_the_runner_may_use(tmp_path, tiny_model_dir, qa_file):
    engine, busy, first, second = engine_with_a_running_job(tmp_path, tiny_model_dir, qa_file)
    try:
        # Two slots, but max_running 1: the first queued job waits for alice's 30 s, the second for an unknown.
        assert engine.devices.queue_estimates() == {first: 30.0, second: None}
        engine.jobs.runner.max_running = 0
        assert engine.devices.queue_estimates(engine.jobs.all()) == {first: None, second: None}
    finally:
        engine.close()


def test_engine_device_holdings_show_jobs_reservations_and_models(tmp_path, tiny_model_dir, qa_file):
    engine, busy, first, second = engine_with_a_running_job(tmp_path, tiny_model_dir, qa_file)
    try:
        engine.sessions.reserve(busy, 5 * 2**20)
        loaded = engine.models.load()
        rows = {row["device"]: row for row in engine.devices.device_holdings()}
        assert list(rows) == ["cpu:0", "cpu:1", "cpu"]  # the two job slots, then the RAM the app serves from
        slot = rows["cpu:0"]
        assert slot["jobs"] == [{"id": busy, "owner": "alice", "kind": "sft", "state": "running", "eta_s": 30.0}]
        assert slot["reservations"] == [{"job": busy, "mb": 5.0}] and slot["serving"] == []
        assert rows["cpu:1"]["jobs"] == rows["cpu:1"]["reservations"] == []
        served = rows["cpu"]["serving"]
        assert [(e["key"], e["kind"], e["mb"]) for e in served] == [(loaded.spec.key, "model",
                                                                     round(loaded.nbytes / 2**20, 1))]
        assert rows["cpu"]["jobs"] == [] and rows["cpu"]["waiting"] == []
    finally:
        engine.sessions.release(busy)
        engine.close()
