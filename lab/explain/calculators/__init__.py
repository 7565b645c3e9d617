"""Live numbers for the Explain tab, computed by the libraries that train rather than re-derived.

    python -c "from lab.explain.calculators import batch_math; print(batch_math(4, 4, 1, 1000, 512, 3, 0.03))"

One module per topic (batch, schedule, lora, architecture, memory); this package gathers their public
names so the tab, the CLI, the catalog's `live` entries and the tests call the same functions. Where a
number comes from a library call (warmup steps, learning rates, LoRA scaling, parameter counts) the call
is made there; where no library computes it (memory) the formula is written out with its assumptions.
"""

from lab.explain.calculators.architecture import (
    ArchitectureParams,
    architecture_formula,
    architecture_params,
    pretrain_preview,
)
from lab.explain.calculators.batch import BatchMath, batch_math
from lab.explain.calculators.lora import TrainableParams, lora_scale, lora_targets, trainable_params
from lab.explain.calculators.memory import (
    LORA_MODULE_INPUTS,
    MEMORY_ASSUMPTIONS,
    OPTIMIZER_STATES,
    MemoryEstimate,
    Verdict,
    format_bytes,
    memory_estimate,
    unquantized_params,
    verdict,
)
from lab.explain.calculators.schedule import (
    METRIC_DRIVEN_SCHEDULERS,
    SCHEDULER_TYPES,
    default_scheduler_kwargs,
    demo_eval_losses,
    lr_curve,
)
from lab.training.architecture import GATED_ACTIVATIONS, PLAIN_ACTIVATIONS, architecture_config

__all__ = [
    "BatchMath", "batch_math", "SCHEDULER_TYPES", "METRIC_DRIVEN_SCHEDULERS", "default_scheduler_kwargs",
    "demo_eval_losses", "lr_curve", "lora_scale", "TrainableParams", "lora_targets", "trainable_params",
    "ArchitectureParams", "architecture_formula", "architecture_params", "pretrain_preview", "OPTIMIZER_STATES",
    "MEMORY_ASSUMPTIONS", "LORA_MODULE_INPUTS", "MemoryEstimate", "memory_estimate", "unquantized_params",
    "Verdict", "verdict", "format_bytes", "GATED_ACTIVATIONS", "PLAIN_ACTIVATIONS", "architecture_config",
]
