"""Training jobs end to end on the tiny Llama: real `accelerate launch` subprocesses, files on disk.

Each test runs a few optimizer steps of a 2-layer, 64-wide model, so the time goes mostly into
starting Python processes. The slow test at the end trains the embedded SmolLM2 on the bundled
QA set and checks that the loss goes down.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from lab.core.device import choose_device
from lab.core.settings import REPO_ROOT
from lab.inference.session import SessionManager
from lab.training.configs import load_config
from lab.training.configs.base import save_config
from lab.training.configs.sft import SftConfig
from lab.training.jobs.command import command_for, command_preview
from lab.training.jobs.files import read_metrics
from lab.training.jobs.launch import run_config
from lab.training.jobs.runner import (
    ACTIVE_STATES,
    JobRunner,
    create_job,
    job_dir,
    kill_job,
    list_jobs,
    resume_job,
    stop_job,
)
from lab.training.jobs.status import read_status, update_status


def config(model_dir: Path, data: Path, **overrides) -> SftConfig:
    base = dict(model_id=str(model_dir), datasets=[{"path": str(data), "format": "qa"}], max_steps=3,
                per_device_train_batch_size=2, learning_rate=1e-2, max_length=32, save_steps=2, logging_steps=1)
    return SftConfig(**(base | overrides))


@pytest.fixture
def runner(tmp_path):
    """A JobRunner over a private data dir; jobs still running after the test are killed, never left behind."""
    job_runner = JobRunner(tmp_path / "data")
    yield job_runner
    for job in list_jobs(job_runner.data_dir):
        if job["state"] in ACTIVE_STATES:
            kill_job(job_runner.data_dir, job["id"], grace_s=5)


def wait_for(predicate, timeout_s: float = 300, what: str = "condition"):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(what)


@pytest.fixture(scope="module")
def lora_job(tmp_path_factory, tiny_model_dir, qa_file):
    """One LoRA job run through JobRunner -> accelerate launch, shared by the tests that inspect it."""
    data_dir = tmp_path_factory.mktemp("lab-data")
    sessions = SessionManager(choose_device(has_cuda=False, has_flash_attn=False), 2**30, loader=None)
    runner = JobRunner(data_dir, sessions=sessions)
    job_id = runner.submit(config(tiny_model_dir, qa_file, output_name="tiny-lora"))
    assert [e["kind"] for e in sessions.stats()["entries"]] == ["reservation"]  # held while it trains
    status = runner.wait(job_id, timeout_s=300)
    assert sessions.used_bytes == 0  # and given back when it ends
    return data_dir, job_id, status


def test_lora_job_runs_end_to_end_through_accelerate(lora_job, tiny_model_dir):
    data_dir, job_id, status = lora_job
    folder = job_dir(data_dir, job_id)
    assert status["state"] == "completed", status.get("message")
    assert status["step"] == status["max_steps"] == 3
    assert status["world_size"] == 1 and status["trainable_params"] < status["total_params"]
    assert "accelerate launch" in (folder / "train.log").read_text()
    rows = read_metrics(folder)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(k in train_rows[-1] for k in ("learning_rate", "grad_norm", "tokens_per_s", "epoch", "timestamp"))
    assert (folder / "checkpoints" / "checkpoint-2").is_dir()
    # The adapter is registered where Compare and Arena look, with its base model recorded.
    adapter = Path(status["adapter_dir"])
    assert adapter == data_dir / "adapters" / "tiny-lora"
    meta = json.loads((adapter / "adapter_meta.json").read_text())
    assert meta["base_model_id"] == str(tiny_model_dir) and meta["job_id"] == job_id
    # Trainable parameters changed: LoRA's B matrices start at zero and are no longer zero.
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)


@pytest.mark.parametrize("mode, extra", [
    ("full", {}),
    ("qlora", {}),
    ("lora", {"packing": True, "optim": "muon", "lora_preset": "minimal"}),
    ("lora", {"optim": "adamw_8bit", "lr_scheduler_type": "cosine", "warmup_ratio": 0.5, "use_rslora": True,
              "lora_preset": "all", "completion_only_loss": False, "eval_fraction": 0.25, "eval_steps": 1}),
], ids=["full", "qlora", "lora-packing-muon", "lora-8bit-adamw-cosine-eval"])
def test_modes_and_options_train_in_the_foreground(tmp_path, tiny_model_dir, qa_file, mode, extra):
    cfg = config(tiny_model_dir, qa_file, mode=mode, max_steps=2, **extra)
    folder, state = run_config(save_config(cfg, tmp_path / "cfg.yaml"), tmp_path / "data")
    status = read_status(folder)
    assert state == "completed", status.message
    rows = read_metrics(folder)
    assert len([r for r in rows if "loss" in r]) == 2
    if mode == "full":
        trained = load_file(str(folder / "output" / "model.safetensors"))
        base = load_file(str(tiny_model_dir / "model.safetensors"))
        changed = [name for name in base if not torch.equal(base[name], trained[name])]
        assert "model.layers.0.self_attn.q_proj.weight" in changed
        assert status.trainable_params == status.total_params and status.adapter_dir is None
        return
    assert status.load_in_4bit is (mode == "qlora")
    weights = load_file(str(Path(status.adapter_dir) / "adapter_model.safetensors"))
    assert all(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)
    if "eval_fraction" in extra:
        assert status.eval_rows == 2 and [r["step"] for r in rows if "eval_loss" in r] == [1, 2]


def test_stop_then_resume_continues_from_the_checkpoint(runner, tmp_path, tiny_model_dir, qa_file):
    job_id = runner.submit(config(tiny_model_dir, qa_file, max_steps=10_000, save_steps=10_000))
    folder = job_dir(tmp_path / "data", job_id)
    wait_for(lambda: read_status(folder).step >= 2, what="two training steps")
    assert runner.stop(job_id)["state"] == "stopping"
    status = runner.wait(job_id, timeout_s=120)
    assert status["state"] == "stopped", status.get("message")
    stopped_at = status["step"]
    assert (folder / "checkpoints" / f"checkpoint-{stopped_at}").is_dir()  # the stop itself saved it
    assert not (folder / "STOP").exists()
    # Shorten the run so the resumed part takes two more steps instead of thousands.
    cfg = load_config(folder / "config.yaml")
    cfg.max_steps = stopped_at + 2
    save_config(cfg, folder / "config.yaml")
    assert "--resume" in command_for(folder, resume=True)
    before = len(read_metrics(folder))
    status = runner.resume(job_id)
    assert status["state"] in ("queued", "running")
    status = runner.wait(job_id, timeout_s=300)
    assert status["state"] == "completed", status.get("message")
    resumed_steps = [r["step"] for r in read_metrics(folder)[before:] if "loss" in r]
    assert resumed_steps == [stopped_at + 1, stopped_at + 2]


def test_two_process_cpu_ddp_run_completes(runner, tmp_path, tiny_model_dir, qa_file):
    job_id = runner.submit(config(tiny_model_dir, qa_file, accelerate_config="ddp_cpu_2proc", max_steps=2))
    assert "--config_file" in command_for(job_dir(tmp_path / "data", job_id))
    status = runner.wait(job_id, timeout_s=300)
    assert status["state"] == "completed", status.get("message")
    assert status["world_size"] == 2
    assert len([r for r in read_metrics(job_dir(tmp_path / "data", job_id)) if "loss" in r]) == 2


def test_bad_dataset_fails_with_a_readable_message(runner, tmp_path, tiny_model_dir):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"question": "what is the capital ?", "answer": "paris"}\n{"question": "what ?"}\n')
    job_id = runner.submit(config(tiny_model_dir, data))
    status = runner.wait(job_id, timeout_s=300)
    assert status["state"] == "failed"
    assert "broken.jsonl line 2" in status["message"] and "'answer'" in status["message"]
    assert "Traceback" in runner.log(job_id)  # the full story stays in the log


def test_second_job_waits_in_the_queue_and_kill_lets_it_run(runner, tmp_path, tiny_model_dir, qa_file):
    data_dir = tmp_path / "data"
    first = runner.submit(config(tiny_model_dir, qa_file, max_steps=10_000, save_steps=10_000))
    second = runner.submit(config(tiny_model_dir, qa_file, max_steps=2))
    jobs = {j["id"]: j for j in runner.list()}
    assert jobs[first]["state"] == "running"
    assert jobs[second]["state"] == "queued" and jobs[second]["queue_position"] == 1
    wait_for(lambda: read_status(job_dir(data_dir, first)).step >= 1, what="first job training")
    pid = read_status(job_dir(data_dir, first)).pid
    assert runner.kill(first)["state"] == "stopped"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    status = runner.wait(second, timeout_s=300)
    assert status["state"] == "completed", status.get("message")
    assert read_status(job_dir(data_dir, first)).state == "stopped"  # the kill was not taken for a crash


def test_fresh_runner_rebuilds_jobs_from_disk(tmp_path, tiny_model_dir, qa_file):
    data_dir = tmp_path / "data"
    queued = create_job(config(tiny_model_dir, qa_file, max_steps=1), data_dir)
    crashed = create_job(config(tiny_model_dir, qa_file), data_dir)
    folder = job_dir(data_dir, crashed)
    (folder / "train.log").write_text("step 1\nKilled\n")
    dead = psutil.Popen(["true"])
    dead.wait()
    update_status(folder, state="running", pid=dead.pid, pid_started=time.time() - 5)
    # No runner has ever seen these jobs: the list comes from the folders alone.
    jobs = {j["id"]: j for j in list_jobs(data_dir)}
    assert jobs[queued]["state"] == "queued" and jobs[queued]["queue_position"] == 1
    assert jobs[crashed]["state"] == "failed" and "Killed" in jobs[crashed]["message"]
    # A new runner (the app after a restart) starts the queued job: it was never lost.
    status = JobRunner(data_dir).wait(queued, timeout_s=300)
    assert status["state"] == "completed", status.get("message")
    resume_job(data_dir, crashed)
    assert read_status(folder).state == "queued"


def test_job_too_big_for_the_memory_budget_fails_before_starting(tmp_path, tiny_model_dir, qa_file):
    sessions = SessionManager(choose_device(has_cuda=False, has_flash_attn=False), 1000, loader=None)
    runner = JobRunner(tmp_path / "data", sessions=sessions)
    job_id = runner.submit(config(tiny_model_dir, qa_file))
    status = runner.status(job_id)
    assert status["state"] == "failed" and "budget" in status["message"] and status["pid"] is None


@pytest.mark.parametrize("bad_id", ["../escape", "..", "a/b", "/etc/passwd", "", "x/../../y", ".hidden"])
def test_job_ids_cannot_leave_the_jobs_folder(tmp_path, bad_id):
    with pytest.raises(ValueError, match="Job id .* is not allowed"):
        job_dir(tmp_path, bad_id)
    with pytest.raises(ValueError, match="Job id .* is not allowed"):
        stop_job(tmp_path, bad_id)


def test_commands(tmp_path, tiny_model_dir, qa_file):
    cfg = config(tiny_model_dir, qa_file)
    job_id = create_job(cfg, tmp_path)
    argv = command_for(job_dir(tmp_path, job_id))
    assert argv[0].endswith("accelerate") and argv[1] == "launch"
    assert argv[argv.index("--num_processes") + 1] == "1"
    assert ("--cpu" in argv) == (not torch.cuda.is_available())
    assert argv[-3:] == ["-m", "lab.training.jobs.launch", str(job_dir(tmp_path, job_id) / "config.yaml")]
    cfg.accelerate_config = "ddp_cpu_2proc"
    assert "--config_file assets/accelerate/ddp_cpu_2proc.yaml -m lab.training.jobs.launch" in command_preview(cfg)
    for name in ("single", "ddp_cpu_2proc", "ddp_gpu", "deepspeed_zero2", "fsdp"):
        assert (REPO_ROOT / "assets" / "accelerate" / f"{name}.yaml").is_file()


def test_merge_gives_the_same_logits_as_base_plus_adapter(lora_job, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lab.inference.adapters import merge_adapter
    data_dir, _, status = lora_job
    out = merge_adapter(status["adapter_dir"], tmp_path / "merged", data_dir)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    ids = torch.tensor([[1, 10, 11, 12, 13, 14, 15]])
    merged = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with_adapter = PeftModel.from_pretrained(base, status["adapter_dir"]).eval()
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    with torch.no_grad():
        expected, got, untouched = (m(ids).logits for m in (with_adapter, merged, plain))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, untouched, atol=1e-4)  # the adapter did change the model


def test_cli_commands(lora_job, capsys, monkeypatch):
    from lab.cli import main as lab_main
    data_dir, job_id, _ = lora_job
    monkeypatch.setenv("LAB_DATA_DIR", str(data_dir))
    assert lab_main(["jobs", "list"]) == 0
    assert job_id in capsys.readouterr().out
    assert lab_main(["show-command", str(REPO_ROOT / "assets/presets/sft_lora_qa.yaml")]) == 0
    assert "-m lab.training.jobs.launch" in capsys.readouterr().out
    assert lab_main(["jobs", "stop", job_id]) == 2  # completed jobs cannot be stopped
    assert "only queued or running" in capsys.readouterr().err
    assert lab_main(["jobs", "show", "../x"]) == 2


@pytest.mark.slow
def test_sft_lora_on_embedded_model_lowers_the_loss(runner, tmp_path):
    from lab.core.settings import LabSettings
    from lab.inference.models import materialise_embedded
    model = materialise_embedded(LabSettings().subdir("models"))
    cfg = load_config(REPO_ROOT / "assets/presets/sft_lora_qa.yaml")
    cfg.model_id, cfg.max_steps, cfg.eval_dataset = str(model), 12, None
    cfg.per_device_train_batch_size, cfg.max_length, cfg.save_steps = 4, 128, 100
    job_id = runner.submit(cfg)
    status = runner.wait(job_id, timeout_s=900)
    assert status["state"] == "completed", status.get("message")
    losses = [r["loss"] for r in runner.metrics(job_id) if "loss" in r]
    assert len(losses) == 12
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses


def test_job_environment_carries_no_sign_in_secret(tmp_path, tiny_model_dir, qa_file, monkeypatch):
    """The real Popen of the runner, with the launch command swapped for one that prints its environment."""
    import sys

    from lab.training.jobs import runner as runner_module
    monkeypatch.setenv("LAB_AUTH", "alice:s3cret-pass")
    monkeypatch.setenv("LAB_USERS_FILE", "/etc/lab-users.txt")
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-123")
    monkeypatch.setenv("HF_TOKEN", "hf_kept")  # a Hub model id needs it in the job
    monkeypatch.setattr(runner_module, "launch_argv", lambda cfg, path, resume=False: [
        sys.executable, "-c", "import os; print('ENV', sorted(os.environ))"])
    job_runner = JobRunner(tmp_path / "data")
    job_id = job_runner.submit(config(tiny_model_dir, qa_file))
    job_runner.wait(job_id, timeout_s=60, poll_s=0.1)  # it exits without a final state: failed
    printed = next(line for line in job_runner.log(job_id, 50).splitlines() if line.startswith("ENV"))
    assert "'LAB_DATA_DIR'" in printed and "'HF_TOKEN'" in printed
    assert "LAB_AUTH" not in printed and "LAB_USERS_FILE" not in printed and "API_KEY" not in printed
    assert "s3cret" not in (job_dir(tmp_path / "data", job_id) / "train.log").read_text()


def test_a_new_runner_restores_the_reservations_of_running_jobs(tmp_path, tiny_model_dir, qa_file):
    """After an app restart the budget counts jobs that kept running; their reservation goes when they end."""
    from lab.training.jobs.runner import estimate_job_bytes
    data_dir = tmp_path / "data"
    cfg = config(tiny_model_dir, qa_file)
    running = create_job(cfg, data_dir, foreground=True)  # its worker is this (alive) test process
    dead = create_job(cfg, data_dir, foreground=True)
    update_status(job_dir(data_dir, dead), worker_pid=2**22 + 7, worker_pid_started=1.0)  # no such process
    create_job(cfg, data_dir)  # queued: nothing to restore
    sessions = SessionManager(choose_device(has_cuda=False, has_flash_attn=False), 2**30, loader=None)
    job_runner = JobRunner(data_dir, sessions=sessions, max_running=0)  # max_running=0: start nothing here
    expected = estimate_job_bytes(cfg, data_dir)
    assert expected > 0
    assert [(e["kind"], e["label"]) for e in sessions.stats()["entries"]] == [
        ("reservation", f"reservation for {running}")]
    assert sessions.used_bytes == expected
    update_status(job_dir(data_dir, running), state="completed")
    job_runner.poll()
    assert sessions.used_bytes == 0
