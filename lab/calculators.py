"""Live numbers for the Explain tab, computed by the libraries that train rather than re-derived.

    python -c "from lab.calculators import batch_math; print(batch_math(4, 4, 1, 1000, 512, 3, 0.03))"

Each function is plain and typed; the tab, the CLI and the tests call the same ones. Where a number
comes from a library call (warmup steps, learning rates, LoRA scaling, parameter counts) the call is
made here; where no library computes it (memory) the formula is written out with its assumptions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import (ArceeConfig, AutoConfig, AutoModelForCausalLM, LlamaConfig, PretrainedConfig,
                          PreTrainedModel, StableLmConfig, Starcoder2Config, TrainingArguments, get_scheduler)
from transformers.trainer_utils import SchedulerType

from lab.train_config import LORA_PRESETS

SCHEDULER_TYPES: tuple[str, ...] = tuple(s.value for s in SchedulerType)
METRIC_DRIVEN_SCHEDULERS = ("reduce_lr_on_plateau", "greedy")
"""These two move the learning rate only when told an evaluation metric; warmup does not apply to them."""


def _check(condition: bool, name: str, message: str, value: object) -> None:
    if not condition:
        raise ValueError(f"{name} {message}, got {value!r}")


# --------------------------------------------------------------------------------------------- batch


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
        _check(isinstance(value, int) and value >= 1, name, "must be a whole number >= 1", value)
    _check(max_steps == -1 or max_steps >= 1, "max_steps", "must be -1 (use epochs) or >= 1", max_steps)
    _check(max_steps != -1 or epochs > 0, "epochs", "must be > 0 when max_steps is -1", epochs)
    if warmup_ratio is not None:
        _check(warmup_steps == 0, "warmup_ratio", "cannot be combined with a non-zero warmup_steps", warmup_ratio)
        _check(0 <= warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)", warmup_ratio)
        warmup_steps = warmup_ratio
    _check(warmup_steps >= 0, "warmup_steps", "must be >= 0", warmup_steps)

    micro_batches = math.ceil(math.ceil(dataset_size / per_device_batch) / devices)
    steps_per_epoch = max(micro_batches // grad_accum + int(micro_batches % grad_accum > 0), 1)
    total = max_steps if max_steps > 0 else math.ceil(epochs * steps_per_epoch)
    # The Trainer's own rule, called rather than copied: int(steps) if >= 1 else ceil(total * share).
    args = TrainingArguments(output_dir="unused-explain-calculator", warmup_steps=warmup_steps, report_to="none")
    effective = per_device_batch * grad_accum * devices
    return BatchMath(effective_batch=effective, micro_batches_per_epoch=micro_batches,
                     steps_per_epoch=steps_per_epoch, total_steps=total,
                     warmup_steps=args.get_warmup_steps(total), tokens_per_step=effective * seq_len,
                     epochs_covered=total / steps_per_epoch)


# ----------------------------------------------------------------------------------------- schedules


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
    _check(total_steps >= 1, "total_steps", "must be >= 1", total_steps)
    _check(learning_rate > 0, "learning_rate", "must be > 0", learning_rate)
    _check(0 <= warmup_steps <= total_steps, "warmup_steps", f"must be in [0, total_steps={total_steps}]",
           warmup_steps)
    _check(scheduler_type in SCHEDULER_TYPES, "lr_scheduler_type", f"must be one of {', '.join(SCHEDULER_TYPES)}",
           scheduler_type)
    kwargs = default_scheduler_kwargs(scheduler_type, learning_rate, total_steps) if scheduler_kwargs is None \
        else dict(scheduler_kwargs)
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=learning_rate)
    scheduler = get_scheduler(scheduler_type, optimizer, num_warmup_steps=warmup_steps,
                              num_training_steps=total_steps, scheduler_specific_kwargs=kwargs)
    metric_driven = scheduler_type in METRIC_DRIVEN_SCHEDULERS
    losses = list(eval_losses) if eval_losses is not None else demo_eval_losses(total_steps)
    if metric_driven:
        _check(len(losses) >= total_steps, "eval_losses", f"needs at least total_steps={total_steps} values",
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


# ---------------------------------------------------------------------------------------------- LoRA


def lora_scale(r: int, alpha: float, use_rslora: bool = False) -> float:
    """The factor peft multiplies the adapter's output by: alpha / r, or alpha / sqrt(r) with rsLoRA.

    Read from the `scaling` of a real peft LoRA layer wrapped around a one-layer toy model, so it
    follows whatever rule the installed peft applies.
    """
    _check(isinstance(r, int) and r >= 1, "r", "must be a whole number >= 1", r)
    _check(alpha > 0, "lora_alpha", "must be > 0", alpha)
    toy = torch.nn.Sequential(torch.nn.Linear(8, 8))
    peft_model = get_peft_model(toy, LoraConfig(r=r, lora_alpha=alpha, use_rslora=use_rslora, target_modules=["0"]))
    layer = next(m for m in peft_model.modules() if isinstance(m, LoraLayer))
    return float(layer.scaling["default"])


@dataclass(frozen=True)
class TrainableParams:
    trainable: int
    """Parameters that get gradients (adapters, plus biases when bias != 'none')."""
    total: int
    """All parameters of the adapted model, adapters included (peft's 'all params')."""
    share: float
    """trainable / total."""
    target_modules: list[str]
    """The module names peft actually wrapped, e.g. ['q_proj', 'v_proj']."""
    adapted_layers: int
    """How many linear layers got an adapter."""


def _config_of(model_or_config: PreTrainedModel | PretrainedConfig | str) -> PretrainedConfig:
    if isinstance(model_or_config, PreTrainedModel):
        return model_or_config.config
    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config
    return AutoConfig.from_pretrained(model_or_config)


def lora_targets(target_modules_or_preset: str | list[str]) -> list[str] | str:
    """A preset name (minimal, attention_only, ffn_only, all) or an explicit list ('custom')."""
    if isinstance(target_modules_or_preset, str):
        _check(target_modules_or_preset in LORA_PRESETS, "target_modules",
               f"must be a preset ({', '.join(LORA_PRESETS)}) or a list of module names", target_modules_or_preset)
        return LORA_PRESETS[target_modules_or_preset]
    _check(len(target_modules_or_preset) > 0, "target_modules", "must name at least one module",
           target_modules_or_preset)
    return list(target_modules_or_preset)


def trainable_params(model_or_config: PreTrainedModel | PretrainedConfig | str, r: int,
                     target_modules_or_preset: str | list[str] = "all", bias: str = "none") -> TrainableParams:
    """Trainable and total parameters after peft's get_peft_model, on a copy built on the meta device.

    The model is rebuilt from its config with no memory behind the weights (meta tensors), so a 7B
    model costs a second, and a model passed in is never modified. The count is peft's own
    `get_nb_trainable_parameters` (what `print_trainable_parameters` prints), cross-checked against
    a plain sum over `requires_grad` parameters.
    """
    _check(isinstance(r, int) and r >= 1, "r", "must be a whole number >= 1", r)
    _check(bias in ("none", "lora_only", "all"), "bias", "must be none, lora_only or all", bias)
    config = _config_of(model_or_config)
    lora = LoraConfig(r=r, lora_alpha=2 * r, target_modules=lora_targets(target_modules_or_preset), bias=bias)
    with torch.device("meta"):
        model = get_peft_model(AutoModelForCausalLM.from_config(config), lora)
    trainable, total = model.get_nb_trainable_parameters()
    by_hand = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if by_hand != trainable:
        raise AssertionError(f"peft counts {trainable} trainable parameters but requires_grad sums to {by_hand}")
    return TrainableParams(trainable=trainable, total=total, share=trainable / total,
                           target_modules=sorted(model.peft_config["default"].target_modules),
                           adapted_layers=sum(isinstance(m, LoraLayer) for m in model.modules()))


# -------------------------------------------------------------------------------------- architecture


@dataclass(frozen=True)
class ArchitectureParams:
    instantiated: int
    """Parameters of the model transformers builds from the config (meta device, tied weights once)."""
    analytic: int
    """The same count from the formula in `architecture_formula`."""
    parts: dict[str, int]
    """The formula's terms: embeddings, attention, mlp, norms, lm_head."""
    backend: str
    """The transformers config class that implements this combination of norm and MLP."""


GATED_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu_pytorch_tanh", "reglu": "relu"}
"""Gated MLPs (down(act(gate(x)) * up(x))): three matrices of d_model x d_ff."""
PLAIN_ACTIVATIONS = {"gelu": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu", "relu2": "relu2"}
"""Plain MLPs (down(act(up(x)))): two matrices of d_model x d_ff."""


def _backend_config(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, vocab_size: int,
                    tied: bool, activation: str, norm: str, attention_bias: bool) -> PretrainedConfig:
    """All four backends use RoPE (no position parameters) and the same q/k/v/o attention layout.

    rmsnorm + gated -> Llama; rmsnorm + plain -> Arcee; layernorm + gated -> StableLM;
    layernorm + plain -> Starcoder2. Their bias switches differ, see `architecture_formula`.
    """
    gated = activation in GATED_ACTIVATIONS
    act = GATED_ACTIVATIONS[activation] if gated else PLAIN_ACTIVATIONS[activation]
    common = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_ff, num_hidden_layers=n_layers,
                  num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, tie_word_embeddings=tied,
                  hidden_act=act, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if norm == "rmsnorm":
        cls = LlamaConfig if gated else ArceeConfig
        return cls(**common, attention_bias=attention_bias, mlp_bias=False)
    if gated:
        return StableLmConfig(**common, use_qkv_bias=attention_bias)
    return Starcoder2Config(**common, use_bias=attention_bias)


def architecture_formula(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, vocab_size: int,
                         tied_embeddings: bool, gated: bool, norm: str, attention_bias: bool) -> dict[str, int]:
    """Parameter count by hand, term by term (head_dim = d_model / n_heads, kv = n_kv_heads * head_dim).

    embeddings  V*d
    attention   L * (d*d [q] + 2*d*kv [k, v] + d*d [o] + biases)
    mlp         L * (3 if gated else 2) * d*d_ff
    norms       (2L + 1) * d for RMSNorm (scale only), twice that for LayerNorm (scale and shift)
    lm_head     V*d unless tied to the embeddings

    attention_bias adds, per layer: q, k, v and o biases (Llama, Arcee); q, k, v only (StableLM);
    q, k, v, o and both MLP biases (Starcoder2, whose switch covers every linear layer).
    """
    kv = n_kv_heads * (d_model // n_heads)
    qkvo_bias = 2 * d_model + 2 * kv
    if not attention_bias:
        bias = 0
    elif norm == "rmsnorm":  # Llama, Arcee
        bias = qkvo_bias
    elif gated:  # StableLM: q, k, v only
        bias = qkvo_bias - d_model
    else:  # Starcoder2: every linear layer, the MLP's two included
        bias = qkvo_bias + d_ff + d_model
    norm_size = d_model if norm == "rmsnorm" else 2 * d_model
    return {"embeddings": vocab_size * d_model,
            "attention": n_layers * (2 * d_model * d_model + 2 * d_model * kv + bias),
            "mlp": n_layers * (3 if gated else 2) * d_model * d_ff,
            "norms": (2 * n_layers + 1) * norm_size,
            "lm_head": 0 if tied_embeddings else vocab_size * d_model}


def architecture_config(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, vocab_size: int,
                        tied_embeddings: bool = False, activation: str = "swiglu", norm: str = "rmsnorm",
                        attention_bias: bool = False) -> PretrainedConfig:
    """The transformers config of a decoder-only architecture (validated; a bad value names its field).

    n_kv_heads = n_heads is multi-head attention, 1 is multi-query, anything between is grouped-query.
    """
    for name, value in (("d_model", d_model), ("n_layers", n_layers), ("n_heads", n_heads),
                        ("n_kv_heads", n_kv_heads), ("d_ff", d_ff), ("vocab_size", vocab_size)):
        _check(isinstance(value, int) and value >= 1, name, "must be a whole number >= 1", value)
    _check(d_model % n_heads == 0, "d_model", f"must be divisible by n_heads={n_heads}", d_model)
    _check((d_model // n_heads) % 2 == 0, "d_model", "/ n_heads must be even (RoPE rotates pairs of dimensions)",
           d_model)
    _check(n_heads % n_kv_heads == 0, "n_heads", f"must be divisible by n_kv_heads={n_kv_heads}", n_heads)
    _check(activation in GATED_ACTIVATIONS or activation in PLAIN_ACTIVATIONS, "activation",
           f"must be one of {', '.join([*GATED_ACTIVATIONS, *PLAIN_ACTIVATIONS])}", activation)
    _check(norm in ("rmsnorm", "layernorm"), "norm", "must be rmsnorm or layernorm", norm)
    return _backend_config(d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab_size, tied_embeddings,
                           activation, norm, attention_bias)


def architecture_params(d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, d_ff: int, vocab_size: int,
                        tied_embeddings: bool = False, activation: str = "swiglu", norm: str = "rmsnorm",
                        attention_bias: bool = False) -> ArchitectureParams:
    """Parameter count of a decoder-only architecture, by building it in transformers on the meta device."""
    config = architecture_config(d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab_size, tied_embeddings,
                                 activation, norm, attention_bias)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    parts = architecture_formula(d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab_size, tied_embeddings,
                                 activation in GATED_ACTIVATIONS, norm, attention_bias)
    return ArchitectureParams(instantiated=sum(p.numel() for p in model.parameters()), analytic=sum(parts.values()),
                              parts=parts, backend=type(config).__name__)


# -------------------------------------------------------------------------------------------- memory

OPTIMIZER_STATES: dict[str, tuple[float, int | None]] = {
    "adamw": (2, None), "adamw_torch": (2, None), "adamw_torch_fused": (2, None), "sophia": (2, None),
    "adamw_8bit": (2, 1), "adamw_bnb_8bit": (2, 1), "paged_adamw_8bit": (2, 1),
    "lion": (1, None), "lion_32bit": (1, 4), "lion_8bit": (1, 1), "ademamix": (3, 4),
    "muon": (1, None), "rmsprop": (1, None), "sgd": (0, None), "adafactor": (0, None),
}
"""Per trainable parameter: (state tensors, bytes per element; None = the parameter's own dtype,
which is what torch.optim does). Adafactor is handled apart (factored statistics)."""

MEMORY_ASSUMPTIONS = (
    "Weights: n_params x bits/8. 4-bit is NF4 in blocks of 64 (an fp32 absmax per block, or an 8-bit "
    "absmax plus a second fp32 level with double_quant); 8-bit is one byte per weight. "
    "unquantized_params (embeddings, lm_head, norms: bitsandbytes leaves them alone) stay in 16 bits.",
    "trainable_params == n_params means full fine-tuning: gradients and optimizer state take the weights' "
    "dtype. Otherwise the trainable parameters are LoRA adapters on a frozen base, kept in fp32 as peft "
    "does, with their gradients and optimizer state in fp32 too.",
    "Optimizer state per trainable weight: AdamW and Sophia 2 tensors, Lion, Muon and RMSprop 1, SGD 0, "
    "8-bit variants 1 byte per element, Adafactor a row and a column vector per matrix (counted as if "
    "every matrix were hidden x hidden). torch.optim keeps its state in the parameter's dtype.",
    "Activations are what autograd keeps for backward in a Llama-style block, counted per token: RMSNorm "
    "with fp32 internals; SDPA keeping q, k, v, its output and an fp32 log-sum-exp per head (eager "
    "attention keeps the heads x seq_len probabilities instead); a gated MLP keeping 4 x d_ff values "
    "(3 x d_ff when frozen, since a frozen down projection needs no input). Frozen projections keep no "
    "input; each adapter keeps its input (an fp32 copy when the model computes in 16 bits) and its r "
    "outputs. Compute dtype is fp32 for bits=32, otherwise 16-bit.",
    "The head keeps fp32 log-probabilities over the vocabulary; at the start of backward two more "
    "fp32 tensors of that size (their gradients) exist briefly: the 'transient' part. With gradient "
    "checkpointing each layer keeps only its input, and one layer is recomputed at a time during "
    "backward; the transient part is the larger of that layer and the two gradients.",
    "Not counted: the CUDA context and kernels' workspace (a few hundred MB on a GPU), allocator "
    "fragmentation, dropout masks, data loader buffers. Measured against a tiny CPU run in "
    "tests/test_calculators.py.",
)

LORA_MODULE_INPUTS = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "o_proj": "attn_out",
                      "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "mlp_mid"}
"""Llama-style linear layers by the tensor they read: the three attention inputs share the normed
hidden state, o_proj reads the attention output, gate/up share the second normed state, down reads d_ff."""


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    gradients: int
    optimizer_state: int
    activations: int
    total: int
    activation_parts: dict[str, int] = field(default_factory=dict)
    """layers and head (kept by autograd for backward) and transient (alive briefly during backward)."""


def _weight_bytes(n_params: int, bits: int, unquantized_params: int, double_quant: bool) -> float:
    if bits in (32, 16):
        return n_params * bits / 8
    per_param = {8: 1.0, 4: 0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)}[bits]
    return (n_params - unquantized_params) * per_param + unquantized_params * 2


def _adapted_modules(spec: str | list[str], gated_mlp: bool) -> list[str]:
    targets = lora_targets(spec)
    if targets == "all-linear":
        return [m for m in LORA_MODULE_INPUTS if gated_mlp or m != "gate_proj"]
    unknown = [t for t in targets if t not in LORA_MODULE_INPUTS]
    _check(not unknown, "lora_modules", f"must be Llama-style names ({', '.join(LORA_MODULE_INPUTS)})", unknown)
    return list(targets)


def _adapter_activation_bytes(targets: list[str], r: int, a: int, hidden: int, d_ff: int) -> int:
    """Per token and layer: what the adapters keep. In fp32 adapters reading the same tensor share it
    (and o_proj's input is already kept by attention); in 16 bits each adapter makes its own fp32 copy."""
    width = {"attn_in": hidden, "attn_out": hidden, "mlp_in": hidden, "mlp_mid": d_ff}
    if a == 4:
        groups = {LORA_MODULE_INPUTS[t] for t in targets} - {"attn_out"}
        inputs = sum(4 * width[g] for g in groups)
    else:
        inputs = sum(4 * width[LORA_MODULE_INPUTS[t]] for t in targets)
    return inputs + 4 * r * len(targets)


def memory_estimate(n_params: int, trainable_params: int, bits: int, optimizer: str, batch: int, seq_len: int,
                    hidden: int, layers: int, grad_checkpointing: bool = False, *, d_ff: int | None = None,
                    n_heads: int | None = None, n_kv_heads: int | None = None, vocab_size: int = 32000,
                    unquantized_params: int = 0, attention: str = "sdpa", gated_mlp: bool = True,
                    double_quant: bool = True, lora_r: int = 16,
                    lora_modules: str | list[str] = "all") -> MemoryEstimate:
    """Bytes of training memory on one device: weights, gradients, optimizer state, activations.

    Every formula and what it leaves out is in MEMORY_ASSUMPTIONS. Sizes not given default to:
    d_ff = 8/3 x hidden (gated) or 4 x hidden (plain), n_heads = hidden / 64, n_kv_heads = n_heads.
    lora_r and lora_modules (a preset or Llama module names) only matter for adapter training.
    """
    _check(bits in (32, 16, 8, 4), "bits", "must be 32, 16, 8 or 4", bits)
    _check(optimizer in OPTIMIZER_STATES, "optimizer", f"must be one of {', '.join(OPTIMIZER_STATES)}", optimizer)
    _check(attention in ("sdpa", "eager"), "attention", "must be sdpa or eager", attention)
    for name, value in (("n_params", n_params), ("trainable_params", trainable_params), ("batch", batch),
                        ("seq_len", seq_len), ("hidden", hidden), ("layers", layers), ("lora_r", lora_r)):
        _check(isinstance(value, int) and value >= 1, name, "must be a whole number >= 1", value)
    full = trainable_params == n_params
    _check(not (full and bits in (8, 4)), "bits",
           "of 8 or 4 allows adapter training only (a quantized base takes no full updates)", bits)
    d_ff = d_ff or (int(8 * hidden / 3) if gated_mlp else 4 * hidden)
    n_heads = n_heads or max(1, hidden // 64)
    kv = (n_kv_heads or n_heads) * (hidden // n_heads)

    weights = _weight_bytes(n_params, bits, unquantized_params, double_quant) + (0 if full else trainable_params * 4)
    param_bytes = bits / 8 if full else 4
    gradients = trainable_params * param_bytes
    states, state_bytes = OPTIMIZER_STATES[optimizer]
    if optimizer == "adafactor":
        optimizer_state = trainable_params * param_bytes * 2 / hidden
    else:
        optimizer_state = trainable_params * states * (state_bytes or param_bytes)

    # Bytes kept per token. a = bytes per activation element in the compute dtype.
    a = 4 if bits == 32 else 2
    if attention == "sdpa":
        attn = a * (2 * hidden + 2 * kv) + 4 * n_heads  # q [h], k and v [kv], output [h], log-sum-exp [heads]
    else:  # k and v repeated to every head [h each]; softmax in fp32, then cast for the matmul
        attn = a * 4 * hidden + (4 + (a if a != 4 else 0)) * n_heads * seq_len
    if full:
        norm = 4 * hidden + 4 + 2 * a * hidden  # fp32 input, fp32 rsqrt, normed and scaled outputs
        mlp = a * (4 if gated_mlp else 2) * d_ff  # gate and up outputs, activation, their product
        per_layer = 2 * norm + attn + mlp
    else:
        norm = 4 * hidden + 4  # frozen scale: the normed output is not kept
        mlp = a * (3 if gated_mlp else 1) * d_ff  # frozen down projection keeps no input
        targets = _adapted_modules(lora_modules, gated_mlp)
        per_layer = 2 * norm + attn + mlp + _adapter_activation_bytes(targets, lora_r, a, hidden, d_ff)
    head = norm + 4 * vocab_size + 16  # final norm, fp32 log-probabilities, input ids and labels
    gradients_of_logits = 8 * vocab_size
    tokens = batch * seq_len
    if grad_checkpointing:
        parts = {"layers": layers * a * hidden * tokens, "head": head * tokens,
                 "transient": max(gradients_of_logits, per_layer) * tokens}
    else:
        parts = {"layers": layers * per_layer * tokens, "head": head * tokens,
                 "transient": gradients_of_logits * tokens}
    values = [round(v) for v in (weights, gradients, optimizer_state, sum(parts.values()))]
    return MemoryEstimate(*values, total=sum(values), activation_parts=parts)


@dataclass(frozen=True)
class Verdict:
    fits: bool
    label: str
    """'fits' or 'does not fit'."""
    margin_bytes: int
    """Free memory left after the estimate (negative: how much is missing)."""
    margin_share: float
    """margin_bytes / device_free_bytes."""


def verdict(total: int, device_free_bytes: int) -> Verdict:
    """'fits' when the estimate is at most the free memory; the margin says by how much either way."""
    _check(device_free_bytes > 0, "device_free_bytes", "must be > 0", device_free_bytes)
    margin = device_free_bytes - total
    return Verdict(fits=margin >= 0, label="fits" if margin >= 0 else "does not fit", margin_bytes=margin,
                   margin_share=margin / device_free_bytes)


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; for labels next to the numbers."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"
