"""Pick the device, dtype and attention kernel for this machine.

    python -m lab info        # shows the choice made here

CUDA gets bfloat16 (half the memory of fp32, same exponent range, so no loss scaling) and
flash-attention 2 when the optional `flash-attn` package imports; otherwise PyTorch's fused
`sdpa`. The CPU gets float32: bf16 matmuls on CPU are slow and less exact.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:  # torch is imported by the functions that probe or name a dtype, not by every importer
    import torch


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    """'cuda' or 'cpu'."""
    dtype: torch.dtype
    """Weights and compute dtype for unquantized models."""
    attn_implementation: str
    """'flash_attention_2' or 'sdpa', passed to from_pretrained."""


def choose_device(has_cuda: bool, has_flash_attn: bool) -> DeviceChoice:
    """The pure decision, separated from probing so tests can cover every branch without a GPU."""
    import torch

    if has_cuda:
        return DeviceChoice("cuda", torch.bfloat16, "flash_attention_2" if has_flash_attn else "sdpa")
    return DeviceChoice("cpu", torch.float32, "sdpa")


def detect_device() -> DeviceChoice:
    import torch

    has_cuda = torch.cuda.is_available()
    has_flash = has_cuda and importlib.util.find_spec("flash_attn") is not None
    return choose_device(has_cuda, has_flash)


def memory_info(device: str) -> dict[str, float]:
    """Free and total memory in bytes of the device models live on (plus host RAM always)."""
    vm = psutil.virtual_memory()
    info = {"ram_total": float(vm.total), "ram_available": float(vm.available),
            "process_rss": float(psutil.Process().memory_info().rss)}
    if device == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        info |= {"gpu_total": float(total), "gpu_free": float(free),
                 "gpu_allocated": float(torch.cuda.memory_allocated())}
    return info


def default_budget_bytes(device: str) -> int:
    """80% of what is free now on the device: room for activations and the rest of the process."""
    info = memory_info(device)
    free = info["gpu_free"] if device == "cuda" else info["ram_available"]
    return int(0.8 * free)
