"""The fields every training job shares (TrainConfig) and those of every kind that fine-tunes (AdapterConfig).

    python -m lab show-command assets/presets/sft_lora_qa.yaml

The docstring under each field is the one explanation of that knob: `field_docs()` reads it
back for the Train tab and the CLI help, so UI, CLI and code cannot disagree. Every value is
checked in `__post_init__` and a bad one raises a `ValueError` naming the field.

Each kind's config (sft, dpo, grpo, ppo, pretrain) is its own module beside this one and
subclasses `TrainConfig` or `AdapterConfig`; the table of kinds is `CONFIG_KINDS` in the
package's `__init__`. This module imports no kind, so nothing here can form an import cycle.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import yaml

from lab.core.checks import MAX_MODEL_ID_CHARS, MAX_TOKENS, check, check_finite_fields, check_whole
from lab.core.names import is_safe_name
from lab.core.settings import EMBEDDED_MODEL, REPO_ROOT

ACCELERATE_CONFIG_DIR = REPO_ROOT / "assets" / "accelerate"
CHAT_FORMATS = ("messages", "instruction", "prompt_completion", "qa")
"""Formats that become a chat prompt and an assistant answer (SFT learns the answer; GRPO/PPO score against it)."""
DATASET_FORMATS = (*CHAT_FORMATS, "preference", "text")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay", "greedy")
"""transformers' SchedulerType values, written out so a config validates without importing transformers;
tests/training/test_train_config.py fails when the installed transformers adds or drops one."""

OPTIMIZERS: dict[str, str] = {
    "adamw_torch": "AdamW from PyTorch: two fp32 moments per weight (8 bytes each). The safe default.",
    "adamw_torch_fused": "The same AdamW as one fused kernel per step: faster on GPU and recent CPUs.",
    "adamw_8bit": "AdamW with 8-bit moments from bitsandbytes: optimizer memory drops about 4x, "
                  "quality is usually the same. Runs on CPU too.",
    "paged_adamw_8bit": "8-bit AdamW whose state pages to CPU RAM when the GPU runs short (bitsandbytes).",
    "adafactor": "Adafactor keeps factored second moments (rows + columns, not a full matrix): "
                 "the smallest state of the adaptive optimizers.",
    "lion_32bit": "Lion (bitsandbytes): one momentum and the sign of the update; use a 3-10x smaller learning "
                  "rate than AdamW.",
    "lion_8bit": "Lion with its momentum in 8 bits (bitsandbytes).",
    "ademamix": "AdEMAMix (bitsandbytes): AdamW plus a slow second momentum that remembers older gradients.",
    "sgd": "Plain SGD: no state at all, needs a carefully tuned learning rate.",
    "rmsprop": "RMSprop from PyTorch: one second moment, no momentum of the gradient.",
    "muon": "Muon (torch.optim.Muon): orthogonalised momentum updates for weight matrices. Every trainable "
            "tensor must be a matrix, so the lab offers it for LoRA and QLoRA with bias='none'.",
}
"""Optimizers the lab offers, each verified to take a step on CPU with the installed packages."""

UNAVAILABLE_OPTIMIZERS: dict[str, str] = {
    "muon (full fine-tuning)": "torch.optim.Muon only accepts 2-D weights; full fine-tuning also trains norms and "
                               "embeddings, which need a second optimizer (AdamW) beside it, and transformers' "
                               "Trainer has no built-in Muon+AdamW pair.",
    "adamw_torch_4bit / adamw_torch_8bit": "need the torchao package, which is not installed.",
    "schedule_free_adamw / schedule_free_sgd / schedule_free_radam": "need the schedulefree package, not installed.",
    "galore_adamw / galore_adafactor": "need the galore-torch package, not installed.",
    "apollo_adamw": "needs the apollo-torch package, not installed.",
    "lomo / adalomo": "need the lomo-optim package and replace the Trainer's backward pass; not installed.",
    "grokadamw": "needs the grokadamw package, not installed.",
    "adamw_anyprecision": "needs torchdistx, which has no wheels for this PyTorch.",
    "adamw_torch_xla / adamw_torch_npu_fused": "need TPU (XLA) or Ascend NPU hardware.",
}
"""Optimizer names transformers knows but this lab cannot run here, with the reason."""

LORA_PRESETS: dict[str, list[str] | str] = {
    "minimal": ["q_proj", "v_proj"],
    "attention_only": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "ffn_only": ["gate_proj", "up_proj", "down_proj"],
    "all": "all-linear",
}
"""Where LoRA adapters go; 'all' is peft's 'all-linear' (every linear layer except the output head)."""

INIT_LORA_WEIGHTS = ("default", "gaussian", "pissa", "olora", "orthogonal", "loftq")

MAX_LORA_RANK = 1024
"""LoRA r above this is no longer low-rank for any model the lab trains (the embedded model is 576 wide)."""
MAX_BATCH = 4096
"""Ceiling of per_device_train_batch_size and of gradient_accumulation_steps: far beyond what one device holds or
what a useful step averages; a larger number is a typo that would only fail after the model has loaded."""


@dataclass
class DatasetSpec:
    path: str
    """A JSONL file (format 'text': a .txt/.md file or a folder of them); a relative path is relative to the
    lab's folder (where assets/ is)."""
    weight: float = 1.0
    """Share of this file in the mixture, relative to the others: weights 3 and 1 give 75% and 25% of the rows."""
    format: str = "messages"
    """'messages' ({"messages": [{role, content}, ...]} ending with the assistant), 'instruction'
    ({"instruction", "response"} and an optional "input"), 'prompt_completion' ({"prompt", "completion"}),
    'qa' ({"question", "answer"}, like assets/knowledge/qa.jsonl), 'preference' ({"prompt", "chosen", "rejected"},
    for DPO) or 'text' (plain text, for pretraining). Each kind accepts only some of them."""

    def __post_init__(self) -> None:
        if not str(self.path).strip():
            raise ValueError("datasets[].path is empty; give a JSONL file")
        if not isinstance(self.weight, (int, float)) or not math.isfinite(self.weight) or self.weight <= 0:
            raise ValueError(f"datasets[].weight must be a finite number > 0, got {self.weight!r} for {self.path}")
        if self.format not in DATASET_FORMATS:
            raise ValueError(f"datasets[].format must be one of {', '.join(DATASET_FORMATS)}; "
                             f"got {self.format!r} for {self.path}")

    @property
    def resolved(self) -> Path:
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else REPO_ROOT / path


def _dataset_spec(value: Any, where: str) -> DatasetSpec:
    if isinstance(value, DatasetSpec):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping with path, weight and format; got {value!r}")
    unknown = set(value) - {f.name for f in fields(DatasetSpec)}
    if unknown:
        raise ValueError(f"{where} has unknown key '{sorted(unknown)[0]}'; known: path, weight, format")
    return DatasetSpec(**value)


@dataclass
class TrainConfig:
    accepted_formats: ClassVar[tuple[str, ...]] = CHAT_FORMATS
    kind: str = ""
    """Which trainer runs the job: sft, dpo, grpo, ppo or pretrain."""
    mode: str = "full"
    """Which weights train: 'full' (every weight), 'lora' or 'qlora' (small adapters on a frozen, for qlora
    4-bit, model). Pretraining is always full."""
    model_id: str = EMBEDDED_MODEL
    """The model to start from: 'embedded' (the bundled SmolLM2-135M-Instruct), a local folder, or a Hub id."""
    datasets: list[DatasetSpec] = field(default_factory=list)
    """Training data: one or more JSONL files, each with a relative weight and a format."""
    eval_dataset: DatasetSpec | None = None
    """A held-out JSONL file scored every eval_steps; its loss tells you whether the model generalises or only
    memorises the training rows."""
    eval_fraction: float = 0.0
    """When there is no eval_dataset: the share of training rows held out for evaluation (0 = none)."""
    output_name: str = ""
    """Name of the adapter the run produces (<data>/adapters/<name>/); empty = the job id."""
    max_steps: int = -1
    """Optimizer steps to run; -1 = run num_train_epochs over the data instead."""
    num_train_epochs: float = 1.0
    """Passes over the training data when max_steps is -1; fractions stop part-way through the last pass."""
    per_device_train_batch_size: int = 4
    """Rows per forward pass on each device. Memory grows with batch x max_length."""
    gradient_accumulation_steps: int = 1
    """Forward passes summed before one optimizer step: the effective batch is
    per_device_train_batch_size x gradient_accumulation_steps x processes, at the memory of one pass."""
    learning_rate: float = 2e-4
    """Peak step size. LoRA tolerates about 1e-4 to 1e-3; full fine-tuning wants 1e-5 to 5e-5."""
    lr_scheduler_type: str = "linear"
    """How the learning rate moves after warmup: any transformers scheduler (linear, cosine, constant, ...)."""
    lr_scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra scheduler arguments, e.g. {num_cycles: 2} for cosine_with_restarts or {min_lr: 1e-5}."""
    warmup_steps: int = 0
    """Steps over which the learning rate rises from 0 to its peak; avoids large early updates."""
    warmup_ratio: float = 0.0
    """Warmup as a share of all steps (0.03 = the first 3%); use either this or warmup_steps."""
    optim: str = "adamw_torch"
    """The optimizer; see OPTIMIZERS for what each costs and UNAVAILABLE_OPTIMIZERS for what is missing."""
    weight_decay: float = 0.0
    """Pull on every weight towards zero each step (decoupled, AdamW style); 0.0-0.1 is usual."""
    max_grad_norm: float = 1.0
    """Gradients are rescaled when their total norm exceeds this, so one bad batch cannot blow up the weights
    (0 = no clipping)."""
    seed: int = 42
    """Seed for data order, dropout and adapter initialisation: the same seed gives the same run."""
    max_length: int = 512
    """Tokens per row; longer rows are cut at the end. With packing, the length of each packed block."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them: about 30% slower, much less memory."""
    logging_steps: int = 1
    """Steps between two rows in metrics.jsonl (loss, learning rate, grad norm, tokens/s)."""
    eval_steps: int = 20
    """Steps between two evaluations on the held-out data (ignored when there is none)."""
    save_steps: int = 50
    """Steps between two checkpoints (a stop also saves one); resume continues from the last."""
    save_total_limit: int = 2
    """Checkpoints kept on disk; older ones are deleted (the best one is kept too when keep_best_checkpoint)."""
    keep_best_checkpoint: bool = False
    """At the end, load the checkpoint with the lowest eval loss and export that one instead of the last.
    Needs held-out data and save_steps a multiple of eval_steps."""
    accelerate_config: str | None = None
    """None = one process. Otherwise the name of a file in assets/accelerate/ (ddp_cpu_2proc, ddp_gpu,
    deepspeed_zero2, fsdp) that `accelerate launch` uses for several processes or GPUs."""

    def __post_init__(self) -> None:
        # First, over every field of every kind (subclasses call this first): NaN and infinities never reach the
        # range checks below, which `inf > 0` would pass and `nan` would slip through.
        check_finite_fields(self)
        check(self.mode in ("full", "lora", "qlora"), "mode", "must be full, lora or qlora", self.mode)
        check(bool(self.model_id and str(self.model_id).strip()), "model_id", "must not be empty", self.model_id)
        check(len(str(self.model_id)) <= MAX_MODEL_ID_CHARS, "model_id", "is neither an existing local folder nor a "
              f"valid Hugging Face id (over {MAX_MODEL_ID_CHARS} characters)", f"{str(self.model_id)[:60]}...")
        self.datasets = [_dataset_spec(d, f"datasets[{i}]") for i, d in enumerate(self.datasets or [])]
        check(len(self.datasets) > 0, "datasets", "needs at least one JSONL file", self.datasets)
        if self.eval_dataset is not None:
            self.eval_dataset = _dataset_spec(self.eval_dataset, "eval_dataset")
        for where, spec in [*((f"datasets[{i}]", d) for i, d in enumerate(self.datasets)),
                            *([("eval_dataset", self.eval_dataset)] if self.eval_dataset else [])]:
            check(spec.format in self.accepted_formats, f"{where}.format",
                   f"must be one of {', '.join(self.accepted_formats)} for kind {self.kind}", spec.format)
        check(0 <= self.eval_fraction < 1, "eval_fraction", "must be in [0, 1)", self.eval_fraction)
        check(self.output_name == "" or is_safe_name(self.output_name), "output_name",
               "may use letters, digits, '.', '_' and '-' only (up to 100)", self.output_name)
        check(isinstance(self.max_steps, int) and (self.max_steps == -1 or self.max_steps > 0), "max_steps",
               "must be a whole number > 0, or -1 to use num_train_epochs", self.max_steps)
        check(self.num_train_epochs > 0, "num_train_epochs", "must be > 0", self.num_train_epochs)
        check_whole(self.per_device_train_batch_size, "per_device_train_batch_size", 1, MAX_BATCH)
        check_whole(self.gradient_accumulation_steps, "gradient_accumulation_steps", 1, MAX_BATCH)
        check_whole(self.max_length, "max_length", 1, MAX_TOKENS)
        for name in ("logging_steps", "eval_steps", "save_steps", "save_total_limit"):
            check_whole(getattr(self, name), name, 1)
        check(isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0, "learning_rate",
               "must be > 0", self.learning_rate)
        check(self.lr_scheduler_type in SCHEDULERS, "lr_scheduler_type", f"must be one of {', '.join(SCHEDULERS)}",
               self.lr_scheduler_type)
        check(isinstance(self.lr_scheduler_kwargs, dict), "lr_scheduler_kwargs", "must be a mapping",
               self.lr_scheduler_kwargs)
        check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "warmup_steps",
               "must be a whole number >= 0", self.warmup_steps)
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)", self.warmup_ratio)
        check(not (self.warmup_steps and self.warmup_ratio), "warmup_ratio",
               "cannot be combined with warmup_steps; set one of them to 0", self.warmup_ratio)
        if self.optim not in OPTIMIZERS:
            missing = next((why for names, why in UNAVAILABLE_OPTIMIZERS.items() if self.optim in names), None)
            raise ValueError(f"optim {self.optim!r} " + (f"is not available: {missing}" if missing else
                             f"is unknown; choose one of {', '.join(OPTIMIZERS)}"))
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0", self.weight_decay)
        check(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 = no clipping)", self.max_grad_norm)
        check(isinstance(self.seed, int), "seed", "must be a whole number", self.seed)
        if self.keep_best_checkpoint:
            check(self.eval_dataset is not None or self.eval_fraction > 0, "keep_best_checkpoint",
                   "needs held-out data: set eval_dataset or eval_fraction", self.keep_best_checkpoint)
            check(self.save_steps % self.eval_steps == 0, "save_steps",
                   f"must be a multiple of eval_steps ({self.eval_steps}) when keep_best_checkpoint is on",
                   self.save_steps)
        if self.accelerate_config is not None:
            check(is_safe_name(self.accelerate_config) and self.accelerate_config_path.exists(),
                   "accelerate_config", f"must name a file in {ACCELERATE_CONFIG_DIR.relative_to(REPO_ROOT)}/ "
                   f"({', '.join(sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob('*.yaml')))})",
                   self.accelerate_config)

    @property
    def accelerate_config_path(self) -> Path:
        return ACCELERATE_CONFIG_DIR / f"{self.accelerate_config}.yaml"

    @property
    def has_eval(self) -> bool:
        return self.eval_dataset is not None or self.eval_fraction > 0


@dataclass
class AdapterConfig(TrainConfig):
    """The fields of every kind that fine-tunes an existing model (sft, dpo, grpo, ppo): full, LoRA or QLoRA."""
    mode: str = "lora"
    """'full' trains every weight (most memory: weights + gradients + 2 optimizer moments); 'lora' freezes the
    model and trains small low-rank adapters; 'qlora' does the same on a 4-bit NF4 copy of the model."""
    lora_preset: str = "attention_only"
    """Which layers get adapters: minimal (q, v), attention_only (q, k, v, o), ffn_only (gate, up, down),
    all (every linear layer), or custom (target_modules)."""
    target_modules: list[str] = field(default_factory=list)
    """Module names for lora_preset 'custom', e.g. [q_proj, v_proj, up_proj]."""
    r: int = 16
    """LoRA rank: the inner width of each adapter. Trainable parameters grow linearly with r; 8-64 is usual."""
    lora_alpha: float = 32
    """LoRA scale numerator: the update is multiplied by lora_alpha / r (or / sqrt(r) with use_rslora).
    alpha = 2r is a common start."""
    lora_dropout: float = 0.05
    """Dropout on the adapter's input during training; some regularisation for small datasets."""
    bias: str = "none"
    """Also train biases: 'none', 'lora_only' (biases of adapted layers) or 'all'. Llama-style models have no
    biases, so this changes nothing there."""
    use_rslora: bool = False
    """Rank-stabilised LoRA: scale by lora_alpha / sqrt(r) instead of lora_alpha / r, so raising r does not
    shrink the update."""
    init_lora_weights: str = "default"
    """How adapters start: default (B = 0, so training starts from the unchanged model), gaussian, pissa and
    olora (start from the weight's principal directions), orthogonal, or loftq (initialise to offset 4-bit
    quantisation error; peft computes it on CUDA only)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.lora_preset in (*LORA_PRESETS, "custom"), "lora_preset",
               f"must be one of {', '.join((*LORA_PRESETS, 'custom'))}", self.lora_preset)
        if self.lora_preset == "custom":
            check(bool(self.target_modules) and all(isinstance(m, str) and m for m in self.target_modules),
                   "target_modules", "needs module names when lora_preset is 'custom'", self.target_modules)
        check_whole(self.r, "r", 1, MAX_LORA_RANK)
        check(isinstance(self.lora_alpha, (int, float)) and self.lora_alpha > 0, "lora_alpha", "must be > 0",
               self.lora_alpha)
        check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)", self.lora_dropout)
        check(self.bias in ("none", "lora_only", "all"), "bias", "must be none, lora_only or all", self.bias)
        check(self.init_lora_weights in INIT_LORA_WEIGHTS, "init_lora_weights",
               f"must be one of {', '.join(INIT_LORA_WEIGHTS)}", self.init_lora_weights)
        if self.optim == "muon":
            check(self.mode != "full" and self.bias == "none", "optim",
                   "'muon' needs mode lora or qlora with bias 'none' (Muon only updates matrices)", self.optim)
        if self.mode == "full":
            check(self.init_lora_weights == "default", "init_lora_weights",
                   "only applies to lora and qlora modes", self.init_lora_weights)
        if self.init_lora_weights == "loftq":
            # LoftQ quantises the full-precision base itself; starting from an already 4-bit model defeats it.
            check(self.mode == "lora", "init_lora_weights", "'loftq' needs mode 'lora' (it quantises the base "
                   "itself)", self.init_lora_weights)

    @property
    def uses_lora(self) -> bool:
        return self.mode in ("lora", "qlora")

    @property
    def lora_targets(self) -> list[str] | str:
        return self.target_modules if self.lora_preset == "custom" else LORA_PRESETS[self.lora_preset]


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))
    return path


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field, read from the source (base classes first, overridden by subclasses)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not hasattr(klass, "__dataclass_fields__"):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs
