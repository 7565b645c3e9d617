"""A tab's timer reads the job list from disk and never waits on the runner's lock.

    .venv/bin/python -m pytest -q tests/training/test_jobs_on_disk.py
"""

from __future__ import annotations

import threading

import yaml

from lab.training.configs import config_from_dict
from support import make_engine, tiny_job_yaml


def test_the_timers_list_does_not_wait_while_a_poll_holds_the_runner(tmp_path, tiny_model_dir):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "capital of france?", "answer": "paris"}\n' * 4)
    engine = make_engine(tmp_path / "data", tiny_model_dir)
    try:
        cfg = config_from_dict(yaml.safe_load(tiny_job_yaml(tiny_model_dir, qa, "on-disk")))
        job_id = engine.jobs.runner.submit(cfg)
        held, release, listed = threading.Event(), threading.Event(), []

        def slow_poll() -> None:  # a poll that is starting a job holds the lock for as long as that takes
            with engine.jobs.runner._lock:
                held.set()
                release.wait(60)

        threading.Thread(target=slow_poll, daemon=True).start()
        assert held.wait(30)
        reader = threading.Thread(target=lambda: listed.extend(engine.jobs.on_disk()), daemon=True)
        reader.start()
        reader.join(30)  # a list that took the lock would still be waiting: release is set only below
        done_while_held = not reader.is_alive()
        release.set()
        assert done_while_held
        assert [j["id"] for j in listed] == [job_id] and listed[0]["state"] == "queued"
    finally:
        engine.close()
