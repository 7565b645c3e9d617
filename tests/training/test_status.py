"""status.json through its one writer: unknown keys and states refused, old files still read, no lost fields.

    .venv/bin/python -m pytest -q tests/training/test_status.py
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab.core.settings import REPO_ROOT
from lab.training.jobs.files import STATUS_FILE
from lab.training.jobs.status import ACTIVE_STATES, FINAL_STATES, JobState, JobStatus, read_status, update_status


def test_unknown_key_is_refused_and_nothing_is_written(tmp_path):
    update_status(tmp_path, state="queued", step=0)
    before = (tmp_path / STATUS_FILE).read_text()
    with pytest.raises(ValueError, match="stpe"):
        update_status(tmp_path, stpe=3)
    with pytest.raises(ValueError, match="updated"):
        update_status(tmp_path, updated="yesterday")
    assert (tmp_path / STATUS_FILE).read_text() == before


@pytest.mark.parametrize("state", ["paused", "RUNNING", "", None])
def test_a_state_outside_job_state_is_refused(tmp_path, state):
    update_status(tmp_path, state="running")
    with pytest.raises(ValueError, match="state must be one of queued, running"):
        update_status(tmp_path, state=state)
    assert read_status(tmp_path).state is JobState.RUNNING


def test_round_trip_keeps_every_field_and_its_type(tmp_path):
    fields = dict(id="j1", owner="alice", kind="sft", mode="qlora", model_id="embedded", output_name="mine",
                  created="2026-01-01T00:00:00+00:00", queued_at=1.5, resume=True, state="stopping", message="hi",
                  pid=11, pid_started=2.5, worker_pid=12, worker_pid_started=3.5, started="s", finished="f",
                  returncode=-9, devices=["cuda:0", "cuda:1"], step=4, max_steps=10, eta_s=6.5, tokens_per_s=7.5,
                  peak_memory_mb=8.5, world_size=2,
                  train_rows=20, eval_rows=2, prompts_dropped=1, load_in_4bit=True, trainable_params=5,
                  total_params=50, reference="adapters disabled", backend="LlamaConfig", output_dir="o",
                  adapter_dir="a", error_type="ValueError")
    # Every field but `updated` (set by the write itself): a new JobStatus field must be added here too.
    assert set(fields) | {"updated"} == {f.name for f in dataclasses.fields(JobStatus)}
    written = update_status(tmp_path, **fields)
    read = read_status(tmp_path)
    assert read == written
    assert dataclasses.asdict(read) == fields | {"state": "stopping", "updated": written.updated}
    assert read.state is JobState.STOPPING and read.updated
    # A later write changes only what it names.
    assert dataclasses.replace(update_status(tmp_path, step=5), updated=None) == dataclasses.replace(
        read, step=5, updated=None)


def test_old_status_file_with_unknown_keys_still_reads(tmp_path):
    (tmp_path / STATUS_FILE).write_text(json.dumps({"id": "old", "state": "completed", "step": 3,
                                                    "gone_field": 1, "queue_position": 2}))
    status = read_status(tmp_path)
    assert (status.id, status.state, status.step, status.adapter_dir) == ("old", JobState.COMPLETED, 3, None)
    # Writing to it keeps the known fields and drops the ones no JobStatus has.
    update_status(tmp_path, message="rewritten")
    on_disk = json.loads((tmp_path / STATUS_FILE).read_text())
    assert on_disk["id"] == "old" and on_disk["step"] == 3 and on_disk["message"] == "rewritten"
    assert "gone_field" not in on_disk


@pytest.mark.parametrize("text", [None, "", '{"state": "runn'])
def test_missing_or_half_written_file_reads_as_empty(tmp_path, text):
    if text is not None:
        (tmp_path / STATUS_FILE).write_text(text)
    assert read_status(tmp_path) == JobStatus()


def test_concurrent_writers_lose_no_field(tmp_path):
    """Each thread owns one field and writes it 40 times; a read-merge-write without the lock loses some."""
    owned = ["step", "max_steps", "pid", "worker_pid", "world_size", "train_rows", "eval_rows", "returncode"]
    update_status(tmp_path, state="running")

    def write(field: str) -> None:
        for value in range(1, 41):
            update_status(tmp_path, **{field: value})

    with ThreadPoolExecutor(len(owned)) as pool:
        for future in [pool.submit(write, field) for field in owned]:
            future.result()  # re-raises a writer's exception
    status = read_status(tmp_path)
    assert {field: getattr(status, field) for field in owned} == dict.fromkeys(owned, 40)
    assert status.state is JobState.RUNNING


def test_states_group_into_active_and_final():
    assert set(ACTIVE_STATES) | set(FINAL_STATES) | {JobState.QUEUED} == set(JobState)
    assert not set(ACTIVE_STATES) & set(FINAL_STATES)
    assert "running" in ACTIVE_STATES and "queued" not in FINAL_STATES and None not in ACTIVE_STATES


def test_listing_jobs_does_not_load_the_trainers():
    code = ("import sys, lab.training.jobs.runner; "
            "print([m for m in sys.modules if m.startswith(('lab.training.kinds', 'transformers.trainer', 'trl'))"
            " and m != 'transformers.trainer_utils'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
