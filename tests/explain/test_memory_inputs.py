"""What the Explain tab's memory panel passes to the estimate: LoRA rank and batch size move it, a 4-bit base
keeps the modules bitsandbytes leaves alone in 16 bits, and full fine-tuning defaults to the lab's recipe."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from lab.explain.calculators import memory_estimate, unquantized_params


def test_rank_and_batch_size_enter_the_estimate(tiny_engine, tiny_model_dir):
    def total(r: int, batch: int) -> int:
        est, _, _ = tiny_engine.explain.training_memory(str(tiny_model_dir), "lora", 16, "adamw_torch", batch, 32, False, r,
                                                        "all")
        return est.total
    assert total(2, 1) < total(8, 1) < total(8, 4)


def test_full_fine_tuning_of_fp32_weights_under_autocast_is_16_bytes_per_parameter(tiny_engine, tiny_model_dir):
    est, _, _ = tiny_engine.explain.training_memory(str(tiny_model_dir), "full", 32, "adamw_torch", 1, 8, False, 8, "all")
    n = AutoModelForCausalLM.from_pretrained(tiny_model_dir).num_parameters()
    assert est.weights + est.gradients + est.optimizer_state == 16 * n


def test_a_4bit_base_keeps_unquantized_modules_in_16_bits(tiny_engine, tiny_model_dir):
    """unquantized_params counts what a real NF4 load leaves as 16-bit parameters; the engine passes it."""
    quantized = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, quantization_config=
                                                     BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                                        bnb_4bit_compute_dtype=torch.bfloat16))
    kept = sum(p.numel() for p in quantized.parameters() if p.dtype == torch.bfloat16)
    assert unquantized_params(quantized.config) == kept
    est, _, _ = tiny_engine.explain.training_memory(str(tiny_model_dir), "lora", 4, "adamw_torch", 1, 8, False, 8, "all")
    c = quantized.config
    n = AutoModelForCausalLM.from_pretrained(tiny_model_dir).num_parameters()
    trainable = est.gradients // 4  # adapters train in fp32

    def weights(unquantized: int) -> int:
        return memory_estimate(n, trainable, 4, "adamw", 1, 8, c.hidden_size, c.num_hidden_layers,
                               unquantized_params=unquantized).weights
    assert est.weights == weights(kept) > weights(0)  # 16-bit embeddings and head weigh more than in NF4
