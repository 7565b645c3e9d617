"""Learning-rate schedules as transformers computes them, step by step on a dummy optimizer.

    python -c "from lab.explain.calculators.schedule import lr_curve; print(lr_curve('cosine', 2e-4, 100, 10)[:3])"
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lab.core.checks import check
from lab.training.configs.base import SCHEDULERS

SCHEDULER_TYPES: tuple[str, ...] = SCHEDULERS
"""transformers' SchedulerType values (tests/explain/test_calculators.py compares them with the installed ones)."""
METRIC_DRIVEN_SCHEDULERS = ("reduce_lr_on_plateau", "greedy")
"""These two move the learning rate only when told an evaluation metric; warmup does not apply to them."""


def default_scheduler_kwargs(scheduler_type: str, learning_rate: float, total_steps: int) -> dict:
    """`lr_scheduler_kwargs` that make every scheduler run out of the box, chosen to show its shape.

    - cosine_with_min_lr, cosine_warmup_with_min_lr: transformers raises without a floor; we use
      min_lr_rate=0.1 (the floor is 10% of the peak).
    - warmup_stable_decay: needs num_decay_steps; we decay over the last 20% of the run to 0.
    - greedy: GreedyLR's own min_lr defaults to 1e-3 (max_lr 1.0), above every usual fine-tuning
      rate, so with its defaults the rate can only climb and never comes back down; we bound it to
      [1%, 10x] of the peak and use patience=2.
    - reduce_lr_on_plateau: PyTorch's defaults (factor 0.1, patience 10) work; none needed.
    - every other type: none needed (cosine num_cycles=0.5, cosine_with_restarts num_cycles=1,
      polynomial power=1.0 and lr_end=1e-7, inverse_sqrt timescale=warmup steps are their defaults).
    """
    from transformers.trainer_utils import SchedulerType

    scheduler_type = SchedulerType(scheduler_type).value
    if scheduler_type in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        return {"min_lr_rate": 0.1}
    if scheduler_type == "warmup_stable_decay":
        return {"num_decay_steps": max(1, round(0.2 * total_steps)), "min_lr_ratio": 0.0}
    if scheduler_type == "greedy":
        return {"min_lr": learning_rate * 0.01, "max_lr": learning_rate * 10, "patience": 2}
    return {}


def demo_eval_losses(total_steps: int) -> list[float]:
    """A made-up evaluation loss for the metric-driven schedulers: it improves steadily for the first
    half of the run and then stays flat, so both the 'improving' and the 'plateau' reactions show."""
    half = max(1, total_steps // 2)
    return [2.0 - min(i, half) / half for i in range(total_steps)]


def lr_curve(scheduler_type: str, learning_rate: float, total_steps: int, warmup_steps: int = 0,
             scheduler_kwargs: dict | None = None, eval_losses: Sequence[float] | None = None,
             max_points: int = 2000) -> list[tuple[int, float]]:
    """(step, learning rate) pairs from `transformers.get_scheduler` run on a dummy optimizer.

    The rate at step s is the one the optimizer applies on update s (0-based), read before the
    scheduler advances, for s in 0..total_steps-1. `scheduler_kwargs=None` uses
    `default_scheduler_kwargs`; a dict is passed to transformers unchanged.

    reduce_lr_on_plateau and greedy react to an evaluation metric, not to the step count: here
    each step is one evaluation fed `eval_losses` (default `demo_eval_losses`). The Trainer steps
    them only after each evaluation, so on a real run one point here is one `eval_steps` interval.

    Long runs are stepped in full but only about `max_points` points are returned (the last step
    always included) to keep plots light.
    """
    check(total_steps >= 1, "total_steps", "must be >= 1", total_steps)
    check(learning_rate > 0, "learning_rate", "must be > 0", learning_rate)
    check(0 <= warmup_steps <= total_steps, "warmup_steps", f"must be in [0, total_steps={total_steps}]",
           warmup_steps)
    check(scheduler_type in SCHEDULER_TYPES, "lr_scheduler_type", f"must be one of {', '.join(SCHEDULER_TYPES)}",
           scheduler_type)
    kwargs = default_scheduler_kwargs(scheduler_type, learning_rate, total_steps) if scheduler_kwargs is None \
        else dict(scheduler_kwargs)
    import torch
    from transformers import get_scheduler

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=learning_rate)
    scheduler = get_scheduler(scheduler_type, optimizer, num_warmup_steps=warmup_steps,
                              num_training_steps=total_steps, scheduler_specific_kwargs=kwargs)
    metric_driven = scheduler_type in METRIC_DRIVEN_SCHEDULERS
    losses = list(eval_losses) if eval_losses is not None else demo_eval_losses(total_steps)
    if metric_driven:
        check(len(losses) >= total_steps, "eval_losses", f"needs at least total_steps={total_steps} values",
               len(losses))
    every = max(1, math.ceil(total_steps / max_points))
    curve = []
    for step in range(total_steps):
        if step % every == 0 or step == total_steps - 1:
            curve.append((step, float(optimizer.param_groups[0]["lr"])))
        optimizer.step()  # no gradient, so nothing moves; it only keeps PyTorch's step-order check quiet
        if metric_driven:
            scheduler.step(losses[step])
        else:
            scheduler.step()
    return curve
