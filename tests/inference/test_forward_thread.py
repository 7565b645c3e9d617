"""On a CPU every forward pass of a loaded model runs on the process's one forward thread, whichever thread asks, so
PyTorch keeps one OpenMP team (lab.inference.models.ForwardThread says why).

    .venv/bin/python -m pytest -q tests/inference/test_forward_thread.py
"""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

from lab.core.device import choose_device
from lab.inference.models import FORWARD_THREAD, FORWARD_THREAD_ENV, ModelSpec, load_model, run_on_forward_thread

IDS = torch.tensor([[1, 5, 9, 14, 3, 7]])


@pytest.fixture
def loaded(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv(FORWARD_THREAD_ENV, raising=False)  # read when the model loads; on unless it is 0
    return load_model(ModelSpec(str(tiny_model_dir)), choose_device(has_cuda=False, has_flash_attn=False), tmp_path)


def watch(model, seen: list) -> torch.utils.hooks.RemovableHandle:
    """Record, for each forward of the first layer, the thread it ran on and its grad and inference modes."""
    def hook(*_):
        seen.append((threading.current_thread().name, torch.is_grad_enabled(), torch.is_inference_mode_enabled()))
    return model.model.layers[0].register_forward_pre_hook(hook)


def in_threads(fn, n: int = 4, timeout_s: float = 60) -> None:
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "a forward never came back"


def test_forwards_from_several_threads_all_run_on_the_forward_thread(loaded):
    seen: list = []
    handle = watch(loaded.model, seen)
    try:
        in_threads(lambda: loaded.model(IDS))
        loaded.model(IDS)
    finally:
        handle.remove()
    assert len(seen) == 5
    assert {name for name, _, _ in seen} == {FORWARD_THREAD.name}


def test_the_callers_grad_and_inference_modes_hold_on_the_forward_thread(loaded):
    seen: list = []
    handle = watch(loaded.model, seen)
    try:
        with torch.no_grad():
            assert not loaded.model(IDS).logits.requires_grad
        with torch.inference_mode():
            loaded.model(IDS)
        out = loaded.model(IDS, labels=IDS)  # a training step: the graph is built there and backward runs here
        out.loss.backward()
        assert loaded.model.lm_head.weight.grad is not None
    finally:
        handle.remove()
        loaded.model.zero_grad(set_to_none=True)
    assert [(grad, inference) for _, grad, inference in seen] == [(False, False), (False, True), (True, False)]


def test_an_exception_on_the_forward_thread_is_raised_in_the_caller(loaded):
    def fail(*_):
        raise ValueError("broken layer")

    handle = loaded.model.model.layers[0].register_forward_pre_hook(fail)
    try:
        with pytest.raises(ValueError, match="broken layer"):
            loaded.model(IDS)
    finally:
        handle.remove()
    assert loaded.model(IDS).logits.shape[:2] == IDS.shape  # the thread lives on


def test_forwards_nested_on_the_forward_thread_run_inline(loaded):
    """A forward made from inside a forward (a hook here; PEFT and generate's inner calls elsewhere), and generate
    handed whole to the thread, come back instead of waiting for themselves."""
    inner: list = []

    def nested(*_):
        if not inner:
            inner.append(None)  # the nested forward passes this hook too
            inner[0] = loaded.model(IDS[:, :2]).logits.shape

    handle = loaded.model.model.layers[0].register_forward_pre_hook(nested)
    try:
        in_threads(lambda: loaded.model(IDS), n=1, timeout_s=30)
    finally:
        handle.remove()
    assert inner == [torch.Size([1, 2, loaded.model.config.vocab_size])]
    result: list = []
    in_threads(lambda: result.append(run_on_forward_thread(
        loaded.model, loaded.model.generate, IDS, max_new_tokens=4, do_sample=False)), n=1, timeout_s=30)
    assert result[0].shape == (1, IDS.shape[1] + 4)


def test_greedy_answers_equal_a_plain_models_from_any_thread(loaded, tiny_model_dir):
    plain = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    want = plain.generate(IDS, max_new_tokens=12, do_sample=False)
    got: list = []
    in_threads(lambda: got.append(loaded.model.generate(IDS, max_new_tokens=12, do_sample=False)))
    assert len(got) == 4
    assert all(torch.equal(g, want) for g in got)


def test_the_switch_keeps_forwards_in_the_callers_thread(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(FORWARD_THREAD_ENV, "0")
    model = load_model(ModelSpec(str(tiny_model_dir)), choose_device(has_cuda=False, has_flash_attn=False),
                       tmp_path).model
    seen: list = []
    handle = watch(model, seen)
    try:
        in_threads(lambda: model(IDS), n=2)
    finally:
        handle.remove()
    assert FORWARD_THREAD.name not in {name for name, _, _ in seen}
