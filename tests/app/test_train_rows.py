"""The Train tab's job table: a queued job says when it should start, a training one how long it has left."""

from __future__ import annotations

from tabs.train import job_rows


def test_queued_jobs_show_their_place_and_estimated_start_running_ones_their_time_left():
    jobs = [{"id": "b", "kind": "sft", "state": "queued", "queue_position": 2},
            {"id": "a", "kind": "sft", "state": "queued", "queue_position": 1},
            {"id": "r", "kind": "dpo", "state": "running", "eta_s": 125, "step": 3, "max_steps": 10},
            {"id": "s", "kind": "sft", "state": "stopped", "eta_s": 40}]
    rows = {row[0]: row for row in job_rows(jobs, {"a": 125.0, "b": None})}
    assert rows["a"][2:5] == ["queued (#1)", "0/?", "starts in ~2m05s"]
    assert rows["b"][2] == "queued (#2)" and rows["b"][4] == "start unknown"
    assert rows["r"][4] == "2m05s" and rows["s"][4] == ""  # a stopped job keeps no estimate
    assert job_rows(jobs[1:2], {"a": 0.2})[0][4] == "starts now"
