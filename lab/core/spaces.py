"""Hugging Face Spaces support: ZeroGPU wrapping and what a ZeroGPU Space cannot do.

    SPACES_ZERO_GPU=1 python app.py     # how a ZeroGPU Space runs the lab

On ZeroGPU hardware a GPU is attached only inside functions decorated with `spaces.GPU`, for a
limited time per call. Model calls of the web app are wrapped with `gpu()`, which is a no-op
everywhere else (and when the `spaces` package is absent). Background training needs the GPU
for minutes to hours in another process, which ZeroGPU cannot give, so it is refused there.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

ZERO_GPU_CALL_S = int(os.environ.get("LAB_ZERO_GPU_DURATION", "120"))
"""Seconds of GPU one wrapped call may hold on ZeroGPU (spaces.GPU's duration)."""


def on_zero_gpu() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true") and importlib.util.find_spec("spaces") is not None


def gpu(fn: F) -> F:
    """Wrap a GPU-using event handler for ZeroGPU; return it unchanged anywhere else."""
    if not on_zero_gpu():
        return fn
    import spaces  # only present on Hugging Face Spaces
    return spaces.GPU(duration=ZERO_GPU_CALL_S)(fn)


def refuse_training_on_zero_gpu() -> None:
    if on_zero_gpu():
        raise ValueError("Training jobs cannot run on a ZeroGPU Space: it lends the GPU to one web request at a "
                         "time. Duplicate the Space onto dedicated GPU hardware (Settings → Duplicate this Space) "
                         "or run the lab on your own machine with `make run`.")
