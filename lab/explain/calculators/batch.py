"""Batch arithmetic: effective batch, steps per epoch, total and warmup steps, tokens per update.

    python -c "from lab.explain.calculators.batch import batch_math; print(batch_math(4, 4, 1, 1000, 512, 3, 0.03))"
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lab.core.checks import check


@dataclass(frozen=True)
class BatchMath:
    effective_batch: int
    """Sequences per optimizer update: per-device batch x accumulation x devices."""
    micro_batches_per_epoch: int
    """Forward/backward passes one device makes per epoch."""
    steps_per_epoch: int
    """Optimizer updates per epoch (what schedulers, warmup, eval_steps and save_steps count)."""
    total_steps: int
    """Optimizer updates in the whole run: max_steps when set, otherwise epochs x steps_per_epoch."""
    warmup_steps: int
    """Updates spent ramping the learning rate up, as TrainingArguments.get_warmup_steps computes it."""
    tokens_per_step: int
    """Token positions per update (effective batch x seq_len): exact with packing, an upper bound with padding."""
    epochs_covered: float
    """How many passes over the data the run makes (differs from `epochs` when max_steps is set)."""


def batch_math(per_device_batch: int, grad_accum: int, devices: int, dataset_size: int, seq_len: int,
               epochs: float = 1.0, warmup_steps: float = 0.0, max_steps: int = -1,
               warmup_ratio: float | None = None) -> BatchMath:
    """Effective batch, optimizer steps and warmup for a Trainer run.

    `warmup_steps` follows transformers 5: a value >= 1 is a step count, a value in [0, 1) a share
    of the total steps. transformers 5 removed `warmup_ratio`; passing it here is the same as
    passing that share as `warmup_steps`.

    Steps per epoch follow Trainer.set_initial_training_values: each device sees
    ceil(ceil(dataset_size / per_device_batch) / devices) micro-batches (accelerate shards whole
    batches and pads the last round), and a partial accumulation round at the end of an epoch still
    makes an update.
    """
    for name, value in (("per_device_batch", per_device_batch), ("grad_accum", grad_accum), ("devices", devices),
                        ("dataset_size", dataset_size), ("seq_len", seq_len)):
        check(isinstance(value, int) and value >= 1, name, "must be a whole number >= 1", value)
    check(max_steps == -1 or max_steps >= 1, "max_steps", "must be -1 (use epochs) or >= 1", max_steps)
    check(max_steps != -1 or epochs > 0, "epochs", "must be > 0 when max_steps is -1", epochs)
    if warmup_ratio is not None:
        check(warmup_steps == 0, "warmup_ratio", "cannot be combined with a non-zero warmup_steps", warmup_ratio)
        check(0 <= warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)", warmup_ratio)
        warmup_steps = warmup_ratio
    check(warmup_steps >= 0, "warmup_steps", "must be >= 0", warmup_steps)

    micro_batches = math.ceil(math.ceil(dataset_size / per_device_batch) / devices)
    steps_per_epoch = max(micro_batches // grad_accum + int(micro_batches % grad_accum > 0), 1)
    total = max_steps if max_steps > 0 else math.ceil(epochs * steps_per_epoch)
    # The Trainer's own rule, called rather than copied: int(steps) if >= 1 else ceil(total * share).
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused-explain-calculator", warmup_steps=warmup_steps, report_to="none")
    effective = per_device_batch * grad_accum * devices
    return BatchMath(effective_batch=effective, micro_batches_per_epoch=micro_batches,
                     steps_per_epoch=steps_per_epoch, total_steps=total,
                     warmup_steps=args.get_warmup_steps(total), tokens_per_step=effective * seq_len,
                     epochs_covered=total / steps_per_epoch)
