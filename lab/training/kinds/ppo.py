"""Proximal policy optimisation (full, LoRA, QLoRA) with the lab's own loop (lab/training/kinds/ppo_math.py).

    python -m lab train assets/presets/ppo_lora_qa.yaml

TRL 1.16 has no PPO trainer. This runner builds the policy with a value head and a frozen
reference, then repeats one PPO step (rollout, score, KL-shaped rewards, GAE, clipped updates)
per training step, writing metrics.jsonl and status.json through the job's callback and a
checkpoint every save_steps (or when a STOP file appears), from which --resume continues.
One step = one batch of per_device_train_batch_size prompts and its ppo_epochs x
num_mini_batches optimizer updates. It runs in one process.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from lab.core.checks import check
from lab.core.files import publish_dir
from lab.training.configs.ppo import PpoConfig

if TYPE_CHECKING:
    from lab.training.jobs.callback import JobCallback

VALUE_HEAD_FILE = "value_head.pt"
STATE_FILE = "trainer_state.json"  # the name transformers uses, with the same "global_step" key


# ---- building -----------------------------------------------------------------------------------
def build_actor_critic(cfg: PpoConfig, data_dir: Path, device, checkpoint: str | None):
    """(ActorCritic, tokenizer): the policy (from the checkpoint when resuming), a value head and the reference."""
    import torch
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from lab.training.kinds.common import load_base_model, lora_config
    from lab.training.kinds.ppo_math import ActorCritic, ValueHead
    base, tokenizer, _ = load_base_model(cfg.model_id, data_dir, cfg.mode, device)
    if cfg.mode == "full":
        policy = (AutoModelForCausalLM.from_pretrained(checkpoint, dtype=base.dtype,
                                                       attn_implementation=device.attn_implementation)
                  if checkpoint else copy.deepcopy(base))
        reference = base.requires_grad_(False).eval().to(device.device)
    else:
        if cfg.mode == "qlora":
            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=cfg.gradient_checkpointing)
        policy = (PeftModel.from_pretrained(base, checkpoint, is_trainable=True) if checkpoint
                  else get_peft_model(base, lora_config(cfg)))
        reference = None  # the policy with its adapters disabled
    if cfg.mode != "qlora":  # bitsandbytes placed the 4-bit weights already
        policy.to(device.device)
    # Dropout off: PPO compares log-probabilities of the same answers before and after each update, and dropout
    # noise would look like a change of policy (TRL's trainers disable it too).
    for module in policy.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if cfg.gradient_checkpointing:
        policy.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    value_head = ValueHead(policy.config.hidden_size).to(device.device)
    if checkpoint:
        value_head.load_state_dict(torch.load(Path(checkpoint) / VALUE_HEAD_FILE, map_location=device.device))
    return ActorCritic(policy, value_head, reference), tokenizer


def optimizer_and_scheduler(cfg: PpoConfig, model, job_dir: Path, device, total_updates: int, updates_per_step: int):
    """The optimizer named by cfg.optim (as transformers builds it) over the trainable weights, and the scheduler."""
    from transformers import Trainer, TrainingArguments, get_scheduler

    from lab.training.kinds.common import training_arguments
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(TrainingArguments(**training_arguments(cfg, job_dir, device)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = cls([{"params": params, "weight_decay": cfg.weight_decay}], **kwargs)
    warmup = (math.ceil(cfg.warmup_ratio * total_updates) if cfg.warmup_ratio
              else cfg.warmup_steps * updates_per_step)
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                              num_training_steps=total_updates, scheduler_specific_kwargs=cfg.lr_scheduler_kwargs)
    return optimizer, scheduler


def score_function(cfg: PpoConfig, device: str):
    """fn(prompts, references, answers) -> one score per answer: the weighted built-in rewards plus the reward model."""
    from lab.training.data.rewards import combined_reward, load_reward_model, reward_model_scores
    weights = cfg.reward_weights or [1.0] * (len(cfg.rewards) + bool(cfg.reward_model))
    reward_model = load_reward_model(cfg.reward_model, device) if cfg.reward_model else None

    def score(prompts: list, references: list[str], answers: list[str]) -> list[float]:
        total = combined_reward(cfg.rewards, weights[:len(cfg.rewards)], answers, references)
        if reward_model is not None:
            scores = reward_model_scores(*reward_model, prompts, answers)
            total = [t + weights[-1] * s for t, s in zip(total, scores)]
        return total
    return score


# ---- checkpoints ----------------------------------------------------------------------------------
def save_checkpoint(job_dir: Path, model, tokenizer, optimizer, scheduler, step: int, keep: int) -> Path:
    """checkpoints/checkpoint-<step>/ written under a temporary name first, so a crash never leaves half of one."""
    import torch

    from lab.training.jobs.files import CHECKPOINTS_DIR
    folder = Path(job_dir) / CHECKPOINTS_DIR
    final = folder / f"checkpoint-{step}"
    with publish_dir(final, existing="replace") as tmp:
        model.policy.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(model.value_head.state_dict(), tmp / VALUE_HEAD_FILE)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / STATE_FILE).write_text(json.dumps({"global_step": step}))
    older = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[:-keep]
    for old in older:
        shutil.rmtree(old)
    return final


# ---- the loop -------------------------------------------------------------------------------------
def run_ppo(cfg: PpoConfig, job_dir: Path, callback: JobCallback) -> Path | None:
    """Train; returns the output folder (adapter or full model), or None when stopped before the end."""
    import torch

    from lab.core.device import detect_device
    from lab.training.data.rl import load_prompt_mixture, within_max_length
    from lab.training.jobs.files import OUTPUT_DIR, data_dir_of, stop_requested
    from lab.training.jobs.status import JobState, update_status
    from lab.training.kinds.common import count_parameters
    from lab.training.kinds.ppo_math import ppo_update, rollout
    device = detect_device()
    checkpoint = callback.resume_from
    model, tokenizer = build_actor_critic(cfg, data_dir_of(job_dir), device, checkpoint)
    rows, dropped = within_max_length(load_prompt_mixture(cfg.datasets, cfg.seed), tokenizer, cfg.max_length)
    batch_size = cfg.per_device_train_batch_size
    check(len(rows) >= batch_size, "per_device_train_batch_size", f"is more than the {len(rows)} prompts",
           batch_size)
    batches_per_epoch = len(rows) // batch_size
    max_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * batches_per_epoch)
    updates_per_step = cfg.ppo_epochs * cfg.num_mini_batches
    optimizer, scheduler = optimizer_and_scheduler(cfg, model, job_dir, device, max_steps * updates_per_step,
                                                   updates_per_step)
    start = 0
    if checkpoint:
        optimizer.load_state_dict(torch.load(Path(checkpoint) / "optimizer.pt", map_location=device.device))
        scheduler.load_state_dict(torch.load(Path(checkpoint) / "scheduler.pt"))
        start = json.loads((Path(checkpoint) / STATE_FILE).read_text())["global_step"]
    score = score_function(cfg, device.device)
    update_status(job_dir, train_rows=len(rows), prompts_dropped=dropped, eval_rows=0,
                  reference="adapters disabled" if cfg.uses_lora else "frozen copy of the model",
                  **count_parameters(model))
    callback.on_train_begin(SimpleNamespace(world_size=1), SimpleNamespace(global_step=start, max_steps=max_steps),
                            None)
    tokens = 0
    for step in range(start + 1, max_steps + 1):
        # Seeded per step, so a resumed run samples the same batches and answers it would have.
        torch.manual_seed(cfg.seed + step)
        epoch, index = divmod(step - 1, batches_per_epoch)
        order = random.Random(cfg.seed + epoch).sample(range(len(rows)), len(rows))
        picked = [rows[i] for i in order[index * batch_size:(index + 1) * batch_size]]
        prompts, references = [r["prompt"] for r in picked], [r["reference"] for r in picked]
        batch = rollout(model, tokenizer, prompts, lambda answers, p=prompts, r=references: score(p, r, answers),
                        temperature=cfg.temperature, max_new_tokens=cfg.max_completion_length,
                        kl_coef=cfg.kl_coef, gamma=cfg.gamma, lam=cfg.lam)
        stats = ppo_update(model, optimizer, scheduler, batch, ppo_epochs=cfg.ppo_epochs,
                           num_mini_batches=cfg.num_mini_batches, cliprange=cfg.cliprange,
                           cliprange_value=cfg.cliprange_value, vf_coef=cfg.vf_coef, max_grad_norm=cfg.max_grad_norm,
                           temperature=cfg.temperature, generator=torch.Generator().manual_seed(cfg.seed + step))
        tokens += int(batch.attention_mask.sum())
        if step % cfg.logging_steps == 0 or step == start + 1:
            callback.log_row(step, step / batches_per_epoch, stats | {
                "learning_rate": scheduler.get_last_lr()[0], "num_tokens": float(tokens),
                "reward": float(batch.scores.mean()),
                "kl": float(batch.kl.sum(1).mean()),  # per answer: the sum over its tokens
                "completions/mean_length": float(batch.mask.sum(1).mean())})
        callback.progress(step, max_steps)
        stop = stop_requested(job_dir)
        if step % cfg.save_steps == 0 or stop:
            save_checkpoint(job_dir, model, tokenizer, optimizer, scheduler, step, cfg.save_total_limit)
        if stop:
            callback.stopped = True
            update_status(job_dir, state=JobState.STOPPING, message=f"stop requested: saved step {step}")
            return None
    output = Path(job_dir) / OUTPUT_DIR
    model.policy.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output
