"""Each live number against the library that trains, or against a measured tiny CPU run."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments, get_scheduler
from transformers.trainer_utils import SchedulerType

from lab.explain.calculators import (
    LORA_MODULE_INPUTS,
    SCHEDULER_TYPES,
    batch_math,
    default_scheduler_kwargs,
    demo_eval_losses,
    lora_scale,
    lora_targets,
    lr_curve,
    trainable_params,
    verdict,
)
from lab.explain.calculators.architecture import architecture_params
from lab.explain.calculators.memory import format_bytes, memory_estimate
from support import build_tiny_llama

TINY_VOCAB = 256


# ------------------------------------------------------------------------------------------- batch


class _Scalar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def forward(self, x):
        return {"loss": self.w(x).sum()}


@pytest.mark.parametrize("batch,accum,size,epochs,max_steps,warmup", [
    (4, 4, 1000, 3, -1, 0.03),   # whole accumulation rounds
    (3, 5, 101, 1.5, -1, 0.1),   # a partial last round still makes an update; fractional epochs
    (2, 8, 100, 1, 13, 5),       # max_steps overrides epochs; integer warmup
])
def test_batch_math_matches_the_trainer(tmp_path, batch, accum, size, epochs, max_steps, warmup):
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accum, num_train_epochs=epochs, max_steps=max_steps,
                             warmup_steps=warmup, use_cpu=True, report_to="none")
    trainer = Trainer(model=_Scalar(), args=args, train_dataset=[{"x": torch.ones(1)}] * size)
    dataloader = trainer.get_train_dataloader()
    _, steps_per_epoch, _, _, total_batch, micro_batches, total = trainer.set_initial_training_values(args, dataloader)

    bm = batch_math(batch, accum, 1, size, 128, epochs, warmup, max_steps)
    assert (bm.steps_per_epoch, bm.total_steps, bm.effective_batch, bm.micro_batches_per_epoch) == \
           (steps_per_epoch, total, total_batch, micro_batches)
    assert bm.warmup_steps == args.get_warmup_steps(total)
    assert bm.tokens_per_step == bm.effective_batch * 128


def test_batch_math_devices_and_warmup_ratio():
    bm = batch_math(2, 4, 4, 1000, 512, epochs=2, warmup_ratio=0.05)
    assert bm.effective_batch == 32
    assert bm.micro_batches_per_epoch == math.ceil(500 / 4)  # 500 batches shared by 4 devices
    assert bm.steps_per_epoch == 32 and bm.total_steps == 64
    assert bm.warmup_steps == math.ceil(64 * 0.05)
    assert bm == batch_math(2, 4, 4, 1000, 512, epochs=2, warmup_steps=0.05)
    assert bm.tokens_per_step == 32 * 512


@pytest.mark.parametrize("kwargs,field", [
    (dict(per_device_batch=0), "per_device_batch"), (dict(grad_accum=1.5), "grad_accum"),
    (dict(max_steps=0), "max_steps"), (dict(warmup_steps=-1), "warmup_steps"),
    (dict(warmup_steps=10, warmup_ratio=0.1), "warmup_ratio"), (dict(epochs=0), "epochs"),
])
def test_batch_math_names_the_bad_field(kwargs, field):
    base = dict(per_device_batch=2, grad_accum=2, devices=1, dataset_size=10, seq_len=8)
    with pytest.raises(ValueError, match=field):
        batch_math(**(base | kwargs))


# --------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("scheduler", SCHEDULER_TYPES)
def test_lr_curve_equals_get_scheduler_at_sampled_steps(scheduler):
    lr, total, warmup = 2e-4, 60, 6
    curve = dict(lr_curve(scheduler, lr, total, warmup))
    assert sorted(curve) == list(range(total))

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    reference = get_scheduler(scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total,
                              scheduler_specific_kwargs=default_scheduler_kwargs(scheduler, lr, total))
    sampled = [0, 1, warmup - 1, warmup, warmup + 1, total // 2, total - 2, total - 1]
    if isinstance(reference, torch.optim.lr_scheduler.LambdaLR):
        # Schedule-driven: the closed form transformers registered, evaluated directly at each step.
        for step in sampled:
            assert curve[step] == pytest.approx(lr * reference.lr_lambdas[0](step), rel=1e-9, abs=1e-15)
    else:
        # Metric-driven: replay the same evaluation losses through the library's scheduler.
        losses = demo_eval_losses(total)
        for step in range(total):
            if step in sampled:
                assert curve[step] == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)
            reference.step(losses[step])


def test_lr_curve_shapes_and_kwargs():
    lr = 1e-3
    linear = dict(lr_curve("linear", lr, 100, 10))
    assert linear[0] == 0 and linear[10] == pytest.approx(lr) and linear[99] < lr * 0.02
    floor = dict(lr_curve("cosine_with_min_lr", lr, 100, 10))
    assert floor[99] == pytest.approx(0.1 * lr, rel=0.02)  # the documented default min_lr_rate 0.1
    wsd = dict(lr_curve("warmup_stable_decay", lr, 100, 10))
    assert wsd[50] == pytest.approx(lr) and wsd[79] == pytest.approx(lr) and wsd[99] < 0.01 * lr
    squared = dict(lr_curve("polynomial", lr, 100, 0, {"power": 2.0, "lr_end": 0.0}))
    assert squared[50] == pytest.approx(lr * 0.25)
    plateau = [v for _, v in lr_curve("reduce_lr_on_plateau", lr, 60, 0, {"patience": 2, "factor": 0.5})]
    assert plateau[0] == lr and min(plateau) < lr  # cuts once the demo loss goes flat


def test_lr_curve_needs_kwargs_and_greedy_defaults_never_move():
    with pytest.raises(ValueError, match="min_lr"):
        lr_curve("cosine_with_min_lr", 2e-4, 50, 5, scheduler_kwargs={})
    with pytest.raises(TypeError, match="num_decay_steps"):
        lr_curve("warmup_stable_decay", 2e-4, 50, 5, scheduler_kwargs={})
    # GreedyLR's own min_lr (1e-3) sits above a fine-tuning rate: with its defaults the rate can climb
    # (toward max_lr 1.0) while the loss improves but never comes back down when it plateaus.
    raw = [v for _, v in lr_curve("greedy", 2e-4, 60, 0, scheduler_kwargs={})]
    assert min(raw) == 2e-4 and raw[-1] == max(raw) > 2e-4
    bounded = [v for _, v in lr_curve("greedy", 2e-4, 60, 0)]
    assert bounded[-1] < max(bounded)


def test_lr_curve_thins_long_runs_and_rejects_bad_input():
    curve = lr_curve("cosine", 1e-3, 10_000, 100, max_points=500)
    assert len(curve) <= 501 and curve[-1][0] == 9_999
    with pytest.raises(ValueError, match="lr_scheduler_type"):
        lr_curve("cosin", 1e-3, 10)
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_curve("linear", 1e-3, 10, 20)
    with pytest.raises(ValueError, match="eval_losses"):
        lr_curve("reduce_lr_on_plateau", 1e-3, 10, eval_losses=[1.0])
    assert set(SCHEDULER_TYPES) == {s.value for s in SchedulerType}


# -------------------------------------------------------------------------------------------- LoRA


@pytest.mark.parametrize("r,alpha,rslora", [(8, 16, False), (16, 32, True), (64, 16, True), (5, 7, False)])
def test_lora_scale_equals_peft_scaling_on_a_llama_layer(r, alpha, rslora):
    model = get_peft_model(build_tiny_llama(TINY_VOCAB),
                           LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, target_modules=["q_proj"]))
    layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
    assert lora_scale(r, alpha, rslora) == layer.scaling["default"]
    assert lora_scale(r, alpha, rslora) == pytest.approx(alpha / math.sqrt(r) if rslora else alpha / r)
    with pytest.raises(ValueError, match="lora_alpha"):
        lora_scale(r, 0)


@pytest.mark.parametrize("targets", ["minimal", "attention_only", "ffn_only", "all", ["q_proj", "down_proj"]])
@pytest.mark.parametrize("r", [4, 16])
def test_trainable_params_equal_peft_on_the_real_tiny_llama(targets, r):
    model = build_tiny_llama(TINY_VOCAB)
    counted = trainable_params(model, r, targets)
    assert not any(isinstance(m, LoraLayer) for m in model.modules())  # the caller's model is untouched

    peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=lora_targets(targets)))
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert (counted.trainable, counted.total) == (trainable, total)
    assert counted.share == pytest.approx(trainable / total)
    assert counted.adapted_layers == sum(isinstance(m, LoraLayer) for m in peft_model.modules())


def test_trainable_params_from_a_folder_and_with_biases(tiny_model_dir):
    from_folder = trainable_params(str(tiny_model_dir), 8, "minimal")
    assert from_folder == trainable_params(AutoConfig.from_pretrained(tiny_model_dir), 8, "minimal")
    # Llama has no biases in its linear layers, so bias='all' only adds none; a config with biases shows it.
    biased = build_tiny_llama(TINY_VOCAB).config
    biased.attention_bias = True
    plain, with_bias = trainable_params(biased, 8, "minimal"), trainable_params(biased, 8, "minimal", bias="lora_only")
    assert with_bias.trainable - plain.trainable == 2 * (64 + 32)  # q and v biases in both layers
    with pytest.raises(ValueError, match="target_modules"):
        trainable_params(biased, 8, "everything")


# ------------------------------------------------------------------------------------ architecture


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
@pytest.mark.parametrize("activation", ["swiglu", "geglu", "gelu", "relu"])
@pytest.mark.parametrize("attention_bias", [False, True])
@pytest.mark.parametrize("tied", [False, True])
def test_architecture_formula_equals_instantiated_model(norm, activation, attention_bias, tied):
    result = architecture_params(64, 2, 4, 2, 96, 100, tied, activation, norm, attention_bias)
    assert result.instantiated == result.analytic == sum(result.parts.values())


def test_architecture_params_match_real_models():
    tiny = build_tiny_llama(TINY_VOCAB)
    c = tiny.config
    assert architecture_params(c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
                               c.intermediate_size, c.vocab_size).instantiated == tiny.num_parameters()
    smollm2 = architecture_params(576, 30, 9, 3, 1536, 49152, tied_embeddings=True)  # SmolLM2-135M's shape
    assert smollm2.instantiated == smollm2.analytic == 134_515_008
    mqa, mha = architecture_params(512, 4, 8, 1, 1024, 1000), architecture_params(512, 4, 8, 8, 1024, 1000)
    assert mha.parts["attention"] - mqa.parts["attention"] == 4 * 2 * 512 * (512 - 64)


@pytest.mark.parametrize("kwargs,field", [(dict(d_model=66), "d_model"), (dict(d_model=100), "even"),
                                          (dict(n_kv_heads=3), "n_heads"),
                                          (dict(activation="tanh"), "activation"), (dict(norm="batch"), "norm"),
                                          (dict(n_layers=0), "n_layers")])
def test_architecture_params_names_the_bad_field(kwargs, field):
    base = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=100)
    with pytest.raises(ValueError, match=field):
        architecture_params(**(base | kwargs))


# ------------------------------------------------------------------------------------------ memory
# The estimate is checked against one tiny CPU training step (batch 4 x 64 tokens):
# - weights, gradients, optimizer state: bytes of the actual tensors after an AdamW step, exact
#   (the optimizer allows 1% for AdamW's per-tensor step counters, which the estimate ignores);
# - activations kept for backward: bytes of the tensors autograd saves during the forward pass
#   (saved_tensors_hooks, each storage counted once, parameters excluded), within 10%;
# - total: the peak of CPU allocations during a full step recorded by torch.profiler's memory
#   events, on top of the weights and optimizer state already resident, within 20%.
# Not measured: allocator caching and fragmentation, and anything a GPU adds (CUDA context, kernel
# workspaces); the transient part of activations is only seen through the peak.
ALL_LINEAR = list(LORA_MODULE_INPUTS)


def _measure_step(dtype: torch.dtype, lora: list[str] | None, checkpointing: bool, batch=4, seq=64,
                  autocast: bool = False):
    model = build_tiny_llama(TINY_VOCAB).to(dtype).train()
    config = model.config
    n_params = model.num_parameters()
    if checkpointing:
        model.activation_checkpointing_enable()
    if lora:
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=lora, lora_dropout=0.0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.randint(0, TINY_VOCAB, (batch, seq), generator=torch.Generator().manual_seed(0))

    def forward():
        # As the Trainer runs a bf16 GPU job: the forward under autocast, backward and step outside it.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model(input_ids=ids, labels=ids).loss

    def step():
        forward().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates the optimizer state
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    loss.backward()
    measured = {
        "weights": sum(p.numel() * p.element_size() for p in model.parameters()),
        "gradients": sum(p.grad.numel() * p.grad.element_size() for p in trainable),
        "optimizer_state": sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()),
        "saved_activations": sum(saved.values()),
    }
    optimizer.zero_grad(set_to_none=True)
    del loss
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    measured["peak"] = measured["weights"] + measured["optimizer_state"] + peak
    n_trainable = sum(p.numel() for p in trainable) if lora else n_params
    estimate = memory_estimate(
        n_params, n_trainable, {torch.float32: 32, torch.bfloat16: 16}[dtype], "adamw", batch, seq, config.hidden_size,
        config.num_hidden_layers, checkpointing,
        d_ff=config.intermediate_size, n_heads=config.num_attention_heads, n_kv_heads=config.num_key_value_heads,
        vocab_size=TINY_VOCAB, lora_r=8, lora_modules=lora or "all", autocast=autocast)
    return measured, estimate


@pytest.mark.parametrize("dtype,lora,checkpointing,autocast", [
    (torch.float32, None, False, False), (torch.bfloat16, None, False, False), (torch.float32, None, True, False),
    (torch.float32, ALL_LINEAR, False, False), (torch.float32, ["q_proj", "v_proj"], False, False),
    (torch.bfloat16, ALL_LINEAR, False, False), (torch.float32, ["q_proj", "v_proj"], True, False),
    (torch.float32, None, False, True), (torch.float32, None, True, True), (torch.bfloat16, ALL_LINEAR, False, True),
], ids=["full-fp32", "full-pure-bf16", "full-fp32-ckpt", "lora-all-fp32", "lora-qv-fp32", "lora-all-bf16",
        "lora-qv-fp32-ckpt", "full-mixed", "full-mixed-ckpt", "lora-all-bf16-autocast"])
def test_memory_estimate_matches_a_tiny_cpu_training_step(dtype, lora, checkpointing, autocast):
    """full-mixed is how the lab fine-tunes every weight on a GPU: fp32 master weights, bf16 autocast."""
    measured, est = _measure_step(dtype, lora, checkpointing, autocast=autocast)
    assert est.weights == measured["weights"]
    assert est.gradients == measured["gradients"]
    assert est.optimizer_state == pytest.approx(measured["optimizer_state"], rel=0.01)
    kept = est.activation_parts["layers"] + est.activation_parts["head"]
    assert kept == pytest.approx(measured["saved_activations"], rel=0.10)
    assert est.total == pytest.approx(measured["peak"], rel=0.20)
    assert est.total == est.weights + est.gradients + est.optimizer_state + est.activations


@pytest.mark.parametrize("double_quant", [True, False])
def test_4bit_weight_bytes_match_bitsandbytes(tiny_model_dir, double_quant):
    """The 4-bit formula against a real NF4 load (bitsandbytes runs 4-bit on CPU): packed weights,
    16-bit embeddings/head/norms and per-block scales; the 16-value code tables are left out."""
    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    n_params = full.num_parameters()
    linear = sum(m.weight.numel() for name, m in full.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lm_head" not in name)
    quantized = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, quantization_config=
                                                     BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                                        bnb_4bit_use_double_quant=double_quant,
                                                                        bnb_4bit_compute_dtype=torch.bfloat16))
    measured = 0
    for p in quantized.parameters():
        measured += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:
            measured += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                measured += state.state2.absmax.numel() * 4 + state.offset.numel() * 4
    c = full.config
    est = memory_estimate(n_params, 1000, 4, "adamw", 1, 8, c.hidden_size, c.num_hidden_layers,
                          unquantized_params=n_params - linear, double_quant=double_quant)
    assert est.weights - 1000 * 4 == pytest.approx(measured, rel=0.01)


def test_mixed_precision_full_fine_tuning_costs_16_bytes_per_parameter_before_activations():
    """fp32 master weights under bf16 autocast (the lab's GPU recipe) against pure bf16 (a separate option)."""
    kw = dict(batch=1, seq_len=8, hidden=2048, layers=16, vocab_size=32000)
    n = 1_000_000_000
    mixed = memory_estimate(n, n, 32, "adamw_torch", **kw, autocast=True)
    pure = memory_estimate(n, n, 16, "adamw_torch", **kw)
    assert (mixed.weights + mixed.gradients + mixed.optimizer_state) == 16 * n
    assert (pure.weights + pure.gradients + pure.optimizer_state) == 8 * n
    assert mixed.activations > memory_estimate(n, n, 32, "adamw_torch", **kw).activations / 2  # bf16 weight copies


def test_memory_estimate_orders_and_names_bad_fields():
    kw = dict(batch=4, seq_len=1024, hidden=2048, layers=16, vocab_size=32000)
    n, lora = 1_000_000_000, 10_000_000
    full32 = memory_estimate(n, n, 32, "adamw", **kw)
    full16 = memory_estimate(n, n, 16, "adamw", **kw)
    qlora = memory_estimate(n, lora, 4, "adamw", **kw, unquantized_params=70_000_000)
    assert full32.weights == 4 * n and full32.optimizer_state == 8 * n
    assert qlora.total < full16.total < full32.total
    assert memory_estimate(n, n, 16, "adamw_8bit", **kw).optimizer_state == 2 * n
    assert memory_estimate(n, n, 16, "sgd", **kw).optimizer_state == 0
    ckpt = memory_estimate(n, n, 16, "adamw", **kw, grad_checkpointing=True)
    assert ckpt.activations < full16.activations
    with pytest.raises(ValueError, match="bits"):
        memory_estimate(n, n, 4, "adamw", **kw)
    with pytest.raises(ValueError, match="optimizer"):
        memory_estimate(n, lora, 16, "adamax", **kw)
    with pytest.raises(ValueError, match="lora_modules"):
        memory_estimate(n, lora, 16, "adamw", **kw, lora_modules=["c_attn"])


def test_verdict_reports_fit_and_margin():
    assert verdict(6 * 2**30, 8 * 2**30).label == "fits"
    tight = verdict(9 * 2**30, 8 * 2**30)
    assert (tight.fits, tight.label, tight.margin_bytes) == (False, "does not fit", -2**30)
    assert tight.margin_share == pytest.approx(-0.125)
    with pytest.raises(ValueError, match="device_free_bytes"):
        verdict(1, 0)
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(3 * 2**30) == "3.0 GiB" and format_bytes(12) == "12 B"
