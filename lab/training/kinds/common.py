"""Pieces every training kind shares: model + LoRA building, trainer arguments and the train-and-save ending.

    accelerate launch -m lab.training.jobs.launch <data>/jobs/<id>/config.yaml     # each kind here uses these

The job folder's files are lab/training/jobs/files.py, status.json is lab/training/jobs/status.py and the
callback that writes metrics and progress is lab/training/jobs/callback.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lab.core.device import DeviceChoice
from lab.inference.models import resolve_model_path
from lab.training.configs.base import TrainConfig
from lab.training.jobs.callback import JobCallback
from lab.training.jobs.files import CHECKPOINTS_DIR, EFFECTIVE_ARGS_FILE, OUTPUT_DIR, is_main_process


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
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 renamed it; the old name warns
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


def effective_arguments(trainer) -> dict[str, Any]:
    """What a trainer will really run with: every field of its arguments after the library filled in its defaults
    (TRL's SFTConfig, for one, turns bf16 on unless told otherwise), plus the model's dtype and attention kernel.
    Written to each job's effective_args.json; `bench train` compares two runs' copies."""
    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    args = json.loads(json.dumps(trainer.args.to_dict(), default=str))  # enums and paths as text
    return {"args": args, "model_dtype": str(base.dtype).removeprefix("torch."),
            "attn_implementation": base.config._attn_implementation, "model_class": type(base).__name__,
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}


# ---- outputs ----------------------------------------------------------------------------------
def train_and_save(trainer, job_dir: Path, callback: JobCallback) -> Path | None:
    """Run a Trainer (resuming if asked) and save to the job's output folder; None when stopped.

    save_model writes the adapter alone for LoRA/QLoRA and the whole model (with the tokenizer
    passed as processing_class) otherwise."""
    if is_main_process():
        (Path(job_dir) / EFFECTIVE_ARGS_FILE).write_text(json.dumps(effective_arguments(trainer), indent=1))
    trainer.train(resume_from_checkpoint=callback.resume_from)
    if callback.stopped:
        return None
    output = Path(job_dir) / OUTPUT_DIR
    trainer.save_model(str(output))
    return output
