"""Pieces every training kind shares: the job folder's files, the callback that writes them,
the stop-file check, model + LoRA building, trainer arguments and adapter registration.

    accelerate launch -m lab.training.jobs.launch <data>/jobs/<id>/config.yaml     # lab/training/jobs/launch.py uses all of this

A job folder holds config.yaml, status.json (one JSON object, rewritten under a file lock so the
job runner and the training process never lose each other's fields), metrics.jsonl (one row
per log step), train.log, checkpoints/ and output/. Only the main process (rank 0) writes.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel,
                          PreTrainedTokenizerBase, TrainerCallback)
from transformers.trainer_utils import get_last_checkpoint

from lab.core.device import DeviceChoice
from lab.inference.models import resolve_model_path
from lab.training.configs.base import TrainConfig

CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
STOP_FILE = "STOP"
CHECKPOINTS_DIR = "checkpoints"
OUTPUT_DIR = "output"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def is_main_process() -> bool:
    """Rank 0 of a distributed launch, or the only process (set by torchrun/accelerate before we start)."""
    return int(os.environ.get("RANK", "0")) == 0


def data_dir_of(job_dir: Path) -> Path:
    """<data>/jobs/<id> -> <data>."""
    return Path(job_dir).resolve().parent.parent


# ---- job files ------------------------------------------------------------------------------
def read_status(job_dir: Path) -> dict[str, Any]:
    path = Path(job_dir) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError:  # only if a writer died mid-write on a filesystem without atomic rename
        return {}


def update_status(job_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into status.json atomically; both the runner and the trainer call this."""
    job_dir = Path(job_dir)
    with open(job_dir / ".status.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        status = read_status(job_dir) | fields | {"updated": now_iso()}
        tmp = job_dir / f".{STATUS_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(status, indent=1))
        os.replace(tmp, job_dir / STATUS_FILE)
    return status


def append_metrics(job_dir: Path, row: dict[str, Any]) -> None:
    with open(Path(job_dir) / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def read_metrics(job_dir: Path, since: int = 0) -> list[dict[str, Any]]:
    """Metric rows from row `since` on (pass the count you already have to fetch only new ones)."""
    path = Path(job_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[since:]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a row being written right now
            break
    return rows


def log_tail(job_dir: Path, lines: int = 40) -> str:
    path = Path(job_dir) / LOG_FILE
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64 * 1024))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def stop_requested(job_dir: Path) -> bool:
    return (Path(job_dir) / STOP_FILE).exists()


def last_checkpoint(job_dir: Path) -> str | None:
    folder = Path(job_dir) / CHECKPOINTS_DIR
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


# ---- the callback -----------------------------------------------------------------------------
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
            update_status(self.job_dir, state="stopping" if stop_requested(self.job_dir) else "running",
                          step=state.global_step, max_steps=state.max_steps, message=message,
                          world_size=args.world_size)

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
                update_status(self.job_dir, state="stopping", message=f"stop requested: saving step {state.global_step}")
        return control


# ---- models -----------------------------------------------------------------------------------
def train_dtype(mode: str, device: DeviceChoice) -> torch.dtype:
    """Full fine-tuning keeps fp32 master weights (bf16 autocast on GPU); adapters train on a bf16 base on GPU."""
    return torch.float32 if mode == "full" else device.dtype


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(model_id: str, data_dir: Path, mode: str, device: DeviceChoice
                    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """(model, tokenizer, resolved source) for mode full, lora or qlora (4-bit NF4 through bitsandbytes)."""
    source = resolve_model_path(model_id, Path(data_dir) / "models")
    kwargs: dict[str, Any] = {"dtype": train_dtype(mode, device), "attn_implementation": device.attn_implementation}
    if mode == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=device.dtype)
        if device.device == "cuda":  # bitsandbytes places 4-bit weights at load time: on this rank's GPU
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    return model, load_tokenizer(source), source


def lora_config(cfg):
    """peft LoraConfig from an SftConfig-like config (fields mode, r, lora_alpha, ... lora_targets)."""
    from peft import LoftQConfig, LoraConfig
    init: bool | str = True if cfg.init_lora_weights == "default" else cfg.init_lora_weights
    extra: dict[str, Any] = {}
    if init == "loftq":
        if not torch.cuda.is_available():
            raise ValueError("init_lora_weights 'loftq' needs a CUDA GPU: peft 0.21 computes the LoftQ "
                             "decomposition on CUDA or XPU only. Choose another init on this machine.")
        extra["loftq_config"] = LoftQConfig(loftq_bits=4)
    return LoraConfig(task_type="CAUSAL_LM", r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      bias=cfg.bias, use_rslora=cfg.use_rslora, target_modules=cfg.lora_targets,
                      init_lora_weights=init, **extra)


def build_model(cfg, data_dir: Path, device: DeviceChoice) -> tuple[Any, PreTrainedTokenizerBase, str]:
    """The model to train: the plain model (full) or a PeftModel with LoRA adapters (lora, qlora)."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    model, tokenizer, source = load_base_model(cfg.model_id, data_dir, cfg.mode, device)
    if cfg.mode == "qlora":
        # Freezes the 4-bit base and upcasts norms to fp32 so the small trainable part stays stable.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.uses_lora:
        model = get_peft_model(model, lora_config(cfg))
    return model, tokenizer, source


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total}


# ---- trainer arguments ------------------------------------------------------------------------
def training_arguments(cfg: TrainConfig, job_dir: Path, device: DeviceChoice) -> dict[str, Any]:
    """Keyword arguments for any TrainingArguments subclass (TRL's SFTConfig, DPOConfig, ...)."""
    cuda = device.device == "cuda"
    return dict(
        output_dir=str(Path(job_dir) / CHECKPOINTS_DIR),
        max_steps=cfg.max_steps, num_train_epochs=cfg.num_train_epochs,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
        lr_scheduler_kwargs=cfg.lr_scheduler_kwargs,
        # transformers 5 reads a float in [0, 1) as a share of all steps.
        warmup_steps=cfg.warmup_ratio or cfg.warmup_steps,
        optim="adamw_torch" if cfg.optim == "muon" else cfg.optim,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed,
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps, logging_first_step=True,
        eval_strategy="steps" if cfg.has_eval else "no", eval_steps=cfg.eval_steps,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.keep_best_checkpoint, metric_for_best_model="eval_loss", greater_is_better=False,
        use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(), fp16=False,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0,
    )


def optimizer_override(cfg: TrainConfig) -> tuple[type[torch.optim.Optimizer], dict[str, Any]] | None:
    """Optimizers transformers has no `optim` name for (Muon), as the Trainer's optimizer_cls_and_kwargs."""
    if cfg.optim == "muon":
        return torch.optim.Muon, {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay}
    return None


# ---- outputs ----------------------------------------------------------------------------------
def train_and_save(trainer, job_dir: Path, callback: "JobCallback") -> Path | None:
    """Run a Trainer (resuming if asked) and save to the job's output folder; None when stopped.

    save_model writes the adapter alone for LoRA/QLoRA and the whole model (with the tokenizer
    passed as processing_class) otherwise."""
    trainer.train(resume_from_checkpoint=callback.resume_from)
    if callback.stopped:
        return None
    output = Path(job_dir) / OUTPUT_DIR
    trainer.save_model(str(output))
    return output
