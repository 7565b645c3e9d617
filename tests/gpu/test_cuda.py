"""On a CUDA machine: the device the lab picks there, and models generating on it through lab/inference.

    python -m pytest -q tests/gpu        # skipped, at no cost, without CUDA

torch is imported inside the tests (collecting this file costs nothing): every test asks for the fixture
`torch`, which skips when torch is missing or sees no GPU.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.gpu

SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "head_dim": 64, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
                "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "tie_word_embeddings": True}
"""SmolLM2-135M's shapes (its config.json): a random-weights model of this architecture exercises the same
kernels as the embedded model, without needing the embedded model's files."""


@pytest.fixture
def torch():
    """The torch module, when it sees a GPU; else the test is skipped."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return torch


def expected_attention() -> str:
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


def test_the_lab_picks_bf16_and_a_fused_attention_kernel(torch):
    from lab.core.device import default_budget_bytes, detect_device, memory_info

    device = detect_device()
    assert (device.device, device.dtype, device.attn_implementation) == ("cuda", torch.bfloat16,
                                                                        expected_attention())
    assert torch.cuda.is_bf16_supported()
    info = memory_info("cuda")
    assert 0 < info["gpu_free"] <= info["gpu_total"]
    assert 0 < default_budget_bytes("cuda") < info["gpu_free"]


def generates_on_cuda(loaded, torch, prompt: str, new_tokens: int):
    """The final event of a greedy answer, after checking the model sits on the GPU as the lab chose."""
    from lab.core.device import detect_device
    from lab.inference.generate import GenerationSettings, generate_text, prompt_ids

    choice = detect_device()
    weights = next(loaded.model.parameters())
    assert (loaded.device, weights.device.type, weights.dtype) == ("cuda", "cuda", torch.bfloat16)
    assert loaded.model.config._attn_implementation == choice.attn_implementation
    event = generate_text(loaded.model, loaded.tokenizer, prompt_ids(loaded.tokenizer, prompt),
                          GenerationSettings(max_new_tokens=new_tokens))
    assert event.done and event.timings.ttft_s > 0
    return event


def test_a_random_smollm2_architecture_model_generates_on_cuda(torch, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from lab.core.device import detect_device
    from lab.inference.models import ModelSpec, load_model
    from support import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **SMOLLM2_135M)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    loaded = load_model(ModelSpec(str(tmp_path / "model")), detect_device(), tmp_path / "models")
    event = generates_on_cuda(loaded, torch, "what is the capital of france ?", new_tokens=8)
    # Random weights may end early on the end-of-sequence token; otherwise every step produced a token.
    assert event.finish_reason == "eos" or event.timings.new_tokens > 0


def test_the_embedded_model_answers_on_cuda(torch):
    """The embedded SmolLM2 (materialised into the data directory once, as `make test` prepares it)."""
    from lab.core.device import detect_device
    from lab.core.settings import LabSettings
    from lab.inference.models import ModelSpec, load_model

    loaded = load_model(ModelSpec("embedded"), detect_device(), LabSettings().subdir("models"))
    event = generates_on_cuda(loaded, torch, "What is the capital of France?", new_tokens=24)
    assert "Paris" in event.text
