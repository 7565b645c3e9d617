"""Several jobs at once: real CPU training jobs in two slots, and the runner's pinning and arbiter on a declared
GPU inventory (with a stand-in command, so no GPU is needed to see which GPUs a job would be given)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml

from lab.core.device import choose_device
from lab.inference.session import SessionManager
from lab.training.configs.sft import SftConfig
from lab.training.jobs.files import read_metrics
from lab.training.jobs.inventory import load_inventory
from lab.training.jobs.runner import ACTIVE_STATES, JobRunner, kill_job, list_jobs
from support import tiny_job_yaml, wait_until


@pytest.fixture
def two_slot_engine(tmp_path, tiny_model_dir):
    """The real engine with LAB_CPU_JOB_SLOTS=2 (as a settings field); its jobs are killed after the test."""
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    settings = LabSettings(data_dir=tmp_path / "data", model_id=str(tiny_model_dir), memory_budget_gb=1.0,
                           load_in_4bit=False, auth="", cpu_job_slots=2)
    engine = Engine(settings, device=choose_device(has_cuda=False, has_flash_attn=False))
    yield engine
    engine.jobs.runner.close()
    for job in list_jobs(settings.data_dir):
        if job["state"] in ACTIVE_STATES:
            kill_job(settings.data_dir, job["id"], grace_s=5)


def submit(engine, tmp_path, model_dir, qa, name: str, max_steps: int) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(tiny_job_yaml(model_dir, qa, name, max_steps=max_steps))
    return engine.jobs.submit(engine.jobs.load_config(path))


cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU job slots apply to a machine without a GPU")


@cpu_only
def test_two_jobs_run_at_once_in_two_cpu_slots(two_slot_engine, tmp_path, tiny_model_dir, qa_file):
    engine = two_slot_engine
    first = submit(engine, tmp_path, tiny_model_dir, qa_file, "slot-a", 4)
    second = submit(engine, tmp_path, tiny_model_dir, qa_file, "slot-b", 4)
    jobs = {j["id"]: j for j in engine.jobs.all()}
    assert jobs[first]["state"] == "running" and jobs[second]["state"] == "running"  # neither waits in a queue
    assert {tuple(jobs[first]["devices"]), tuple(jobs[second]["devices"])} == {("cpu:0",), ("cpu:1",)}
    a, b = (engine.jobs.wait(job_id, timeout_s=600) for job_id in (first, second))
    assert a["state"] == "completed" and b["state"] == "completed", (a["message"], b["message"])
    # Their processes' lifetimes overlap: each job's launcher started before the other job finished (one after the
    # other, the second would start no earlier than the first finished). The launcher's start (pid_started) is the
    # mark, not `started`, which the training process rewrites once its imports are done: on a busy machine that
    # can come after a short job beside it has already finished.
    finished = {s["id"]: datetime.fromisoformat(s["finished"]).timestamp() for s in (a, b)}
    assert a["pid_started"] < finished[second] and b["pid_started"] < finished[first]
    for status, name in ((a, "slot-a"), (b, "slot-b")):
        assert Path(status["adapter_dir"]).name == name
        assert (Path(status["adapter_dir"]) / "adapter_model.safetensors").is_file()
        steps = [r["step"] for r in read_metrics(Path(status["dir"])) if "loss" in r]
        assert steps == list(range(1, 5))  # each job's own rows, in its own folder


@cpu_only
def test_stopping_one_of_two_running_jobs_leaves_the_other_to_finish(two_slot_engine, tmp_path, tiny_model_dir,
                                                                    qa_file):
    engine = two_slot_engine
    long = submit(engine, tmp_path, tiny_model_dir, qa_file, "long", 10_000)
    short = submit(engine, tmp_path, tiny_model_dir, qa_file, "short", 6)
    assert engine.jobs.control("stop", long)["state"] == "stopping"
    assert engine.jobs.status(short)["state"] == "running"
    stopped, done = engine.jobs.wait(long, timeout_s=600), engine.jobs.wait(short, timeout_s=600)
    assert stopped["state"] == "stopped", stopped["message"]
    assert done["state"] == "completed", done["message"]
    assert [r["step"] for r in read_metrics(Path(done["dir"])) if "loss" in r] == list(range(1, 7))
    assert (Path(done["adapter_dir"]) / "adapter_model.safetensors").is_file()


def test_runner_pins_jobs_to_declared_gpus_and_clears_the_serving_gpu(tmp_path, tiny_model_dir, qa_file,
                                                                     monkeypatch):
    """Three jobs on two declared GPUs: the 2-GPU one waits (with its reason) while two 1-GPU jobs run, then gets
    both. The stand-in command prints the CUDA_VISIBLE_DEVICES it was given once a `speak` file exists, then waits for
    a gate file."""
    from lab.training.jobs import runner as runner_module
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gate, speak = tmp_path / "gate", tmp_path / "speak"
    monkeypatch.setattr(runner_module, "launch_argv", lambda cfg, path, resume=False: [
        sys.executable, "-c", f"import os, time\nwhile not os.path.exists({str(speak)!r}): time.sleep(0.05)\n"
        "print('PINNED', os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)"])
    (tmp_path / "inventory.yaml").write_text(yaml.safe_dump(
        {"devices": [{"name": "cuda:0", "memory_gb": 80}, {"name": "cuda:1", "memory_gb": 80}]}))
    sessions = SessionManager(choose_device(has_cuda=True, has_flash_attn=False), 2**30, loader=None)
    sessions.put("idle", "model", None, 1000, "an idle model")
    sessions.put("busy", "model", None, 1000, "a model answering")
    runner = JobRunner(tmp_path / "data", sessions=sessions, devices=load_inventory(tmp_path / "inventory.yaml"))
    base = dict(model_id=str(tiny_model_dir), datasets=[{"path": str(qa_file), "format": "qa"}])
    try:
        with sessions.pinned("busy"):
            one = runner.submit(SftConfig(**base))
        two = runner.submit(SftConfig(**base, accelerate_config="ddp_gpu"))
        three = runner.submit(SftConfig(**base))
        jobs = {j["id"]: j for j in runner.list()}
        assert (jobs[one]["devices"], jobs[three]["devices"]) == (["cuda:0"], ["cuda:1"])
        assert jobs[two]["state"] == "queued" and jobs[two]["message"].startswith("#1 in queue: waiting for 2 GPUs")
        # The arbiter: the job on the serving GPU (cuda:0) had the idle model unloaded, not the one in use.
        assert "unloaded idle an idle model from cuda:0" in jobs[one]["message"]
        assert "unloaded" not in jobs[three]["message"]
        assert {e["key"] for e in sessions.stats()["entries"]} == {"busy", f"reservation:{one}"}
        # An app restart: a new runner finds both running jobs where they are, and sets memory aside again only for
        # the one on its serving GPU.
        restarted = SessionManager(choose_device(has_cuda=True, has_flash_attn=False), 2**30, loader=None)
        again = JobRunner(tmp_path / "data", sessions=restarted, devices=load_inventory(tmp_path / "inventory.yaml"))
        assert {d.name: d.holds for d in again.devices()} == {"cuda:0": (one,), "cuda:1": (three,)}
        assert [e["key"] for e in restarted.stats()["entries"]] == [f"reservation:{one}"]
        # Killing one of the two leaves the other running; the 2-GPU job still waits for both GPUs. (Killed only
        # once both stand-ins have printed what they were given. The log's first line is the command, which holds
        # the text PINNED too: only a line that starts with it is the stand-in's own.)
        def pinned(job_id: str) -> str | None:
            return next((line for line in runner.log(job_id, 50).splitlines() if line.startswith("PINNED")), None)

        assert (pinned(one), pinned(three)) == (None, None)  # the command line in the log is not the stand-in's
        speak.touch()
        wait_until(lambda: pinned(one) and pinned(three), "both running stand-ins printed their devices", 120)
        assert runner.kill(three)["state"] == "stopped"
        assert runner.status(one)["state"] == "running" and runner.status(two)["state"] == "queued"
        gate.touch()
        for job_id in (one, three, two):
            runner.wait(job_id, timeout_s=120, poll_s=0.1)
        assert {job_id: pinned(job_id) for job_id in (one, two, three)} == {
            one: "PINNED 0", two: "PINNED 0,1", three: "PINNED 1"}
        assert runner.status(two)["devices"] == ["cuda:0", "cuda:1"]
    finally:
        speak.touch()
        gate.touch()
        runner.close()
