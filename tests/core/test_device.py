"""Device choice covers every branch without needing a GPU."""

import torch

from lab.core.device import choose_device, detect_device, memory_info


def test_cpu_gets_float32_and_sdpa():
    choice = choose_device(has_cuda=False, has_flash_attn=True)
    assert (choice.device, choice.dtype, choice.attn_implementation) == ("cpu", torch.float32, "sdpa")


def test_cuda_gets_bf16_and_flash_attention_when_installed():
    assert choose_device(True, True).attn_implementation == "flash_attention_2"
    assert choose_device(True, False).attn_implementation == "sdpa"
    assert choose_device(True, False).dtype == torch.bfloat16


def test_detect_matches_this_machine():
    choice = detect_device()
    assert choice.device == ("cuda" if torch.cuda.is_available() else "cpu")
    info = memory_info(choice.device)
    assert 0 < info["ram_available"] <= info["ram_total"]
    assert ("gpu_free" in info) == (choice.device == "cuda")
