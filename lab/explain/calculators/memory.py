"""Training memory by formula (no library computes it): weights, gradients, optimizer state, activations.

    python -c "from lab.explain.calculators.memory import memory_estimate, format_bytes; \
print(format_bytes(memory_estimate(134_515_008, 1_000_000, 16, 'adamw_torch', 4, 512, 576, 30).total))"

Each assumption is written out in MEMORY_ASSUMPTIONS, which the Explain tab shows beside the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lab.core.checks import check
from lab.explain.calculators.lora import lora_targets

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
    "Precision as the lab trains: full fine-tuning keeps fp32 master weights (bits=32) and on a GPU computes "
    "under bf16 autocast (autocast=True): 4 bytes of weights + 4 of gradients + 8 of AdamW moments = 16 bytes "
    "per parameter, plus the bf16 copies autocast makes of every matmul weight, which autograd keeps for "
    "backward (2 bytes per linear parameter, lm_head included). bits=16 for full fine-tuning is pure bf16 "
    "(2 + 2 + 4 bytes per parameter): a different recipe, shown as its own option. Adapter training on a GPU "
    "runs a bf16 base under autocast too.",
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
    "backward, after the head's backward has freed what the head kept; the transient part is the larger "
    "of that layer (less the freed head) and the two gradients.",
    "Not counted: the CUDA context and kernels' workspace (a few hundred MB on a GPU), allocator "
    "fragmentation, dropout masks, data loader buffers. Measured against a tiny CPU run in "
    "tests/explain/test_calculators.py.",
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
    check(not unknown, "lora_modules", f"must be Llama-style names ({', '.join(LORA_MODULE_INPUTS)})", unknown)
    return list(targets)


def _adapter_activation_bytes(targets: list[str], r: int, a: int, hidden: int, d_ff: int,
                              autocast: bool = False) -> int:
    """Per token and layer: what the adapters keep. In fp32 adapters reading the same tensor share it
    (and o_proj's input is already kept by attention); in 16 bits each adapter makes its own fp32 copy;
    under autocast that copy goes back to bf16 for the matmul, and the bf16 one is what is kept."""
    width = {"attn_in": hidden, "attn_out": hidden, "mlp_in": hidden, "mlp_mid": d_ff}
    if autocast:
        return sum(2 * width[LORA_MODULE_INPUTS[t]] + 2 * r for t in targets)
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
                    lora_modules: str | list[str] = "all", autocast: bool = False) -> MemoryEstimate:
    """Bytes of training memory on one device: weights, gradients, optimizer state, activations.

    Every formula and what it leaves out is in MEMORY_ASSUMPTIONS. Sizes not given default to:
    d_ff = 8/3 x hidden (gated) or 4 x hidden (plain), n_heads = hidden / 64, n_kv_heads = n_heads.
    lora_r and lora_modules (a preset or Llama module names) only matter for adapter training. autocast:
    matmuls run in bf16 while the weights keep `bits` (how the lab trains on a GPU; see MEMORY_ASSUMPTIONS).
    """
    check(bits in (32, 16, 8, 4), "bits", "must be 32, 16, 8 or 4", bits)
    check(optimizer in OPTIMIZER_STATES, "optimizer", f"must be one of {', '.join(OPTIMIZER_STATES)}", optimizer)
    check(attention in ("sdpa", "eager"), "attention", "must be sdpa or eager", attention)
    for name, value in (("n_params", n_params), ("trainable_params", trainable_params), ("batch", batch),
                        ("seq_len", seq_len), ("hidden", hidden), ("layers", layers), ("lora_r", lora_r)):
        check(isinstance(value, int) and value >= 1, name, "must be a whole number >= 1", value)
    full = trainable_params == n_params
    check(not (full and bits in (8, 4)), "bits",
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
    a = 2 if autocast or bits != 32 else 4
    mixed = autocast and full and bits == 32  # fp32 weights and residual stream, bf16 matmuls
    if attention == "sdpa":
        attn = a * (2 * hidden + 2 * kv) + 4 * n_heads  # q [h], k and v [kv], output [h], log-sum-exp [heads]
    else:  # k and v repeated to every head [h each]; softmax in fp32, then cast for the matmul
        attn = a * 4 * hidden + (4 + (a if a != 4 else 0)) * n_heads * seq_len
    if mixed:
        # fp32 norm input, rsqrt and normed output; every linear then keeps its own bf16 cast of its input
        # (q, k, v, gate, up; o_proj's input is already the bf16 attention output).
        norm = 8 * hidden + 4
        casts = (3 + (2 if gated_mlp else 1)) * 2 * hidden
        per_layer = 2 * norm + attn + 2 * (4 if gated_mlp else 2) * d_ff + casts
    elif full:
        norm = 4 * hidden + 4 + 2 * a * hidden  # fp32 input, fp32 rsqrt, normed and scaled outputs
        mlp = a * (4 if gated_mlp else 2) * d_ff  # gate and up outputs, activation, their product
        per_layer = 2 * norm + attn + mlp
    else:
        norm = 4 * hidden + 4  # frozen scale: the normed output is not kept
        mlp = a * (3 if gated_mlp else 1) * d_ff  # frozen down projection keeps no input
        targets = _adapted_modules(lora_modules, gated_mlp)
        per_layer = 2 * norm + attn + mlp + _adapter_activation_bytes(targets, lora_r, a, hidden, d_ff, autocast)
    head = norm + 4 * vocab_size + 16  # final norm, fp32 log-probabilities, input ids and labels
    head += 2 * hidden if mixed else 0  # lm_head's bf16 cast of its input
    gradients_of_logits = 8 * vocab_size
    tokens = batch * seq_len
    # Under autocast with fp32 weights, each matmul weight's bf16 copy is kept for backward (per layer, and
    # lm_head's); with gradient checkpointing only the layer being recomputed holds its copies.
    layer_linear = hidden * (2 * hidden + 2 * kv) + (3 if gated_mlp else 2) * hidden * d_ff
    copies = {"layer": 2 * layer_linear, "head": 2 * vocab_size * hidden} if mixed else {"layer": 0, "head": 0}
    if autocast and not full:  # the fp32 adapters' bf16 copies, spread over the layers
        copies["layer"] = 2 * trainable_params // layers
    if grad_checkpointing:
        residual = 4 if mixed else a
        kept_by_head = head * tokens + copies["head"]
        # A layer is recomputed only after the head's backward has freed what the head kept.
        recomputed = per_layer * tokens + copies["layer"] - kept_by_head
        parts = {"layers": layers * residual * hidden * tokens, "head": kept_by_head,
                 "transient": max(gradients_of_logits * tokens, recomputed)}
    else:
        parts = {"layers": layers * (per_layer * tokens + copies["layer"]), "head": head * tokens + copies["head"],
                 "transient": gradients_of_logits * tokens}
    values = [round(v) for v in (weights, gradients, optimizer_state, sum(parts.values()))]
    return MemoryEstimate(*values, total=sum(values), activation_parts=parts)


def unquantized_params(config) -> int:
    """Parameters a 4- or 8-bit load leaves in 16 bits: everything but the weight matrices of the linear
    layers inside the blocks (embeddings, lm_head, norms, biases), counted on a meta-device copy of the
    model, the modules bitsandbytes replaces being exactly those nn.Linear layers minus the output head."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
    return model.num_parameters() - linear


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
    check(device_free_bytes > 0, "device_free_bytes", "must be > 0", device_free_bytes)
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
