"""The trainer callback every kind shares: metrics.jsonl rows, progress in status.json, and a STOP file
turned into a saved stop.

    accelerate launch -m lab.training.jobs.launch <data>/jobs/<id>/config.yaml     # launch.py hands it to the kind

transformers' Trainer calls the hooks (on_train_begin, on_log, on_step_end); the PPO loop, which
has no Trainer, calls `log_row`, `progress` and `on_train_begin` itself. Only rank 0 writes.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from lab.training.jobs.files import append_metrics, is_main_process, stop_requested
from lab.training.jobs.status import JobState, update_status


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on one, so all processes stop at the same step (else DDP hangs)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item())


METRIC_KEYS = ("loss", "learning_rate", "grad_norm", "eval_loss", "mean_token_accuracy", "eval_mean_token_accuracy",
               "num_tokens",
               # DPO (TRL): implicit rewards of the chosen and rejected answers and how often chosen wins
               "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "eval_rewards/margins",
               "eval_rewards/accuracies",
               # GRPO (TRL) and PPO (lab/training/kinds/ppo_math.py): mean reward, KL to the reference, entropy, clipping
               "reward", "reward_std", "kl", "entropy", "clipfrac", "policy_loss", "value_loss",
               "completions/mean_length")
"""The log keys that become metrics.jsonl columns (any other key a trainer logs is left out)."""


def peak_memory_mb() -> float:
    """This process's peak memory so far: CUDA max allocated on a GPU, else the kernel's peak resident set
    (ru_maxrss, KiB on Linux), which also catches peaks between two steps that sampling RSS would miss."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class JobCallback(TrainerCallback):
    """Writes metrics.jsonl and status.json as training runs and turns a STOP file into a saved stop.

    `resume_from` is the checkpoint the runner should continue from (None = start fresh);
    `stopped` tells the runner afterwards whether training ended because of a stop request.
    Kinds that do not use a transformers Trainer call `log_row` and `progress` themselves.
    """

    def __init__(self, job_dir: Path, resume_from: str | None = None) -> None:
        self.job_dir = Path(job_dir)
        self.resume_from = resume_from
        self.stopped = False
        self._main = is_main_process()
        self._t0 = time.time()
        self._first_step = 0
        self._last_tokens: tuple[float, float] | None = None  # (time, cumulative tokens) at the last log
        self.tokens_per_s: float | None = None

    # -- usable without a Trainer --
    def log_row(self, step: int, epoch: float | None, logs: dict[str, Any]) -> None:
        if not self._main:
            return
        now = time.time()
        if "num_tokens" in logs:  # TRL's running count of trained tokens (all processes)
            then, tokens = self._last_tokens or (self._t0, 0.0)
            if now > then and logs["num_tokens"] >= tokens:
                self.tokens_per_s = (logs["num_tokens"] - tokens) / (now - then)
            self._last_tokens = (now, logs["num_tokens"])
        row = {"step": step, "epoch": None if epoch is None else round(epoch, 4), "timestamp": round(now, 3)}
        for key in METRIC_KEYS:
            if key in logs:
                row[key] = logs[key]
        if "loss" in logs:
            row["tokens_per_s"] = None if self.tokens_per_s is None else round(self.tokens_per_s, 1)
        append_metrics(self.job_dir, row)

    def progress(self, step: int, max_steps: int) -> None:
        if not self._main:
            return
        done = step - self._first_step
        eta = (time.time() - self._t0) / done * (max_steps - step) if done > 0 else None
        update_status(self.job_dir, step=step, max_steps=max_steps,
                      eta_s=None if eta is None else round(eta, 1),
                      tokens_per_s=None if self.tokens_per_s is None else round(self.tokens_per_s, 1),
                      peak_memory_mb=peak_memory_mb())

    # -- transformers hooks --
    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.time()
        self._first_step = state.global_step
        if self._main:
            message = (f"training (resumed from step {state.global_step})" if self.resume_from else "training")
            running = JobState.STOPPING if stop_requested(self.job_dir) else JobState.RUNNING
            update_status(self.job_dir, state=running, step=state.global_step, max_steps=state.max_steps,
                          message=message, world_size=args.world_size)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and ("loss" in logs or "eval_loss" in logs):
            self.log_row(state.global_step, state.epoch, logs)

    def on_step_end(self, args, state, control, **kwargs):
        self.progress(state.global_step, state.max_steps)
        if _any_rank(stop_requested(self.job_dir), args.device):
            # The Trainer saves a checkpoint right after this hook, then leaves its loop.
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
            if self._main:
                update_status(self.job_dir, state=JobState.STOPPING,
                              message=f"stop requested: saving step {state.global_step}")
        return control
