"""Model loading: 4-bit NF4 on CPU, the embedded model's one-time materialisation, and Paris."""

from __future__ import annotations

import pytest
from bitsandbytes.nn import Linear4bit

from lab.core.device import choose_device
from lab.inference.generate import GenerationSettings, generate_text, prompt_ids
from lab.inference.models import EMBEDDED_DIRNAME, ModelSpec, load_model, materialise_embedded

CPU = choose_device(has_cuda=False, has_flash_attn=False)


def test_4bit_nf4_loads_on_cpu_and_generates(tiny_model_dir, tmp_path):
    full = load_model(ModelSpec(str(tiny_model_dir)), CPU, tmp_path)
    nf4 = load_model(ModelSpec(str(tiny_model_dir), load_in_4bit=True), CPU, tmp_path)
    q_proj = nf4.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, Linear4bit) and q_proj.weight.quant_type == "nf4"
    assert nf4.nbytes < full.nbytes
    event = generate_text(nf4.model, nf4.tokenizer, prompt_ids(nf4.tokenizer, "the model"),
                          GenerationSettings(max_new_tokens=3))
    assert event.done and event.timings.ttft_s > 0


@pytest.mark.slow
def test_embedded_model_is_materialised_once(embedded_engine):
    models_dir = embedded_engine.settings.subdir("models")
    folder = materialise_embedded(models_dir)
    assert folder.name == EMBEDDED_DIRNAME and (folder / "model.safetensors").exists()
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert materialise_embedded(models_dir) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    loaded = embedded_engine.models.load()
    assert loaded.model.config.model_type == "llama" and loaded.context_window == 8192
    assert getattr(loaded.model, "hf_quantizer", None) is None  # trainable, not GGUF-marked
    assert 130e6 < loaded.model.num_parameters() < 140e6


@pytest.mark.slow
def test_embedded_model_knows_the_capital_of_france(embedded_engine):
    events = list(embedded_engine.models.generate("What is the capital of France?",
                                                  GenerationSettings(max_new_tokens=24)))
    assert "Paris" in events[-1].text
    assert len(events) > 2  # streamed token by token
