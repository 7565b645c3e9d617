"""The training entry point: one job folder in, status, metrics, checkpoints and an output out.

    accelerate launch --num_processes 1 -m lab.training.jobs.launch <data>/jobs/<id>/config.yaml [--resume]
    python -m lab.training.jobs.launch assets/presets/sft_lora_qa.yaml      # foreground; creates a job folder first

The job runner (lab/training/jobs/runner.py) starts this as a subprocess, never inside the web process. The
config's `kind` picks the runner `run_<kind>(cfg, job_dir, callback)` from RUNNERS; the runner
trains and returns its output folder (None when a STOP file ended it early). This module turns
the outcome into the job's final state: completed (and the adapter registered), stopped, or
failed with a readable message in status.json and the traceback in train.log.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a CPU shared with
# the web app or other jobs, spinning threads fight over the cores; measured here on 2 busy
# cores, a SmolLM2 training step took 28 s with 2 spinning threads and 1.8 s with passive ones.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the imports below come after it on purpose

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

from lab.inference.adapters import register_adapter
from lab.training.configs import load_config
from lab.training.configs.base import TrainConfig
from lab.training.jobs.callback import JobCallback
from lab.training.jobs.files import (
    CONFIG_FILE,
    STATUS_FILE,
    STOP_FILE,
    data_dir_of,
    is_main_process,
    last_checkpoint,
    now_iso,
)
from lab.training.jobs.status import JobState, read_status, update_status
from lab.training.kinds.dpo import run_dpo
from lab.training.kinds.grpo import run_grpo
from lab.training.kinds.ppo import run_ppo
from lab.training.kinds.pretrain import run_pretrain
from lab.training.kinds.sft import run_sft

RUNNERS: dict[str, Callable[[TrainConfig, Path, JobCallback], Path | None]] = {
    "sft": run_sft,
    "dpo": run_dpo,
    "grpo": run_grpo,
    "ppo": run_ppo,
    "pretrain": run_pretrain,
}
"""kind -> run_<kind>(cfg, job_dir, callback). Other kinds add one line here."""


def readable_error(exc: BaseException) -> str:
    """One or two sentences a person can act on; the full traceback goes to train.log."""
    if isinstance(exc, torch.OutOfMemoryError):
        return ("Out of memory on the GPU. Lower per_device_train_batch_size or max_length, turn on "
                "gradient_checkpointing, or use mode qlora. (" + str(exc).splitlines()[0] + ")")
    if isinstance(exc, MemoryError):
        return "Out of memory (RAM). Lower per_device_train_batch_size or max_length, or use a smaller model."
    if isinstance(exc, (ValueError, FileNotFoundError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run_job(job_dir: Path, resume: bool = False) -> JobState:
    """Run one job folder to its end in this process; returns the final state."""
    job_dir = Path(job_dir).resolve()
    main = is_main_process()
    try:
        cfg = load_config(job_dir / CONFIG_FILE)
        resume_from = last_checkpoint(job_dir) if resume else None
        if main:
            note = f"resuming from {Path(resume_from).name}" if resume_from else (
                "no checkpoint saved yet: starting from step 0" if resume else "loading model and data")
            update_status(job_dir, state=JobState.RUNNING, message=note, worker_pid=os.getpid(),
                          worker_pid_started=psutil.Process().create_time(), started=now_iso(), resume=False)
        if cfg.kind not in RUNNERS:
            raise ValueError(f"kind {cfg.kind!r} has a config but no trainer yet; available: {', '.join(RUNNERS)}")
        callback = JobCallback(job_dir, resume_from=resume_from)
        output = RUNNERS[cfg.kind](cfg, job_dir, callback)
    except BaseException as exc:  # every failure must end in a readable state
        traceback.print_exc()
        if main:
            update_status(job_dir, state=JobState.FAILED, message=readable_error(exc), error_type=type(exc).__name__,
                          finished=now_iso())
        if isinstance(exc, KeyboardInterrupt):
            raise
        return JobState.FAILED
    if not main:
        return JobState.STOPPED if output is None else JobState.COMPLETED
    if output is None:
        (job_dir / STOP_FILE).unlink(missing_ok=True)
        step = read_status(job_dir).step
        update_status(job_dir, state=JobState.STOPPED, finished=now_iso(),
                      message=f"stopped at step {step}; a checkpoint was saved, resume continues from there")
        return JobState.STOPPED
    adapter_dir = None
    if (output / "adapter_config.json").exists():
        job_id = job_dir.name
        name = cfg.output_name or job_id  # the id already names the kind: 20261121-120000-sft-1a2b3c
        adapter_dir = str(register_adapter(output, name, cfg.model_id, job_id, data_dir_of(job_dir),
                                           {"kind": cfg.kind, "mode": cfg.mode, "owner": read_status(job_dir).owner,
                                            "data": [Path(d.path).name for d in cfg.datasets]}))
    update_status(job_dir, state=JobState.COMPLETED, finished=now_iso(), eta_s=0, output_dir=str(output),
                  adapter_dir=adapter_dir, message=f"completed; output in {adapter_dir or output}")
    return JobState.COMPLETED


def run_config(config: str | Path, data_dir: str | Path, resume: bool = False) -> tuple[Path, JobState]:
    """Run a config in this process: in its own job folder, or in a new job created for it under data_dir."""
    config = Path(config).resolve()
    if not (config.parent / STATUS_FILE).exists():
        # A config outside a job folder (a preset, say): make a job for it so its files have a home.
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("a multi-process launch needs a config inside a job folder (each process would "
                             "create its own job): use `python -m lab jobs submit CONFIG.yaml`")
        from lab.training.jobs.runner import create_job
        job_id = create_job(load_config(config), data_dir, foreground=True)
        config = Path(data_dir) / "jobs" / job_id / CONFIG_FILE
        if is_main_process():
            print(f"job {job_id}: {config.parent}", flush=True)
    return config.parent, run_job(config.parent, resume=resume)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.training.jobs.launch", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="config.yaml inside a job folder, or any config file (a job is created)")
    parser.add_argument("--resume", action="store_true", help="continue from the job's last checkpoint")
    args = parser.parse_args(argv)
    from lab.core.settings import LabSettings
    folder, state = run_config(args.config, LabSettings().data_dir, resume=args.resume)
    if is_main_process():
        print(f"job {folder.name}: {state}: {read_status(folder).message}", flush=True)
    return 1 if state == JobState.FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
