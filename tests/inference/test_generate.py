"""The streaming generator: timings, greedy determinism, stops, sampling, and bad settings."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lab.inference.generate import GenerationSettings, generate_text, prompt_ids, stream_generate


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_stream_yields_text_and_consistent_timings(tiny):
    model, tok = tiny
    ids = prompt_ids(tok, "what is the capital of france ?")
    events = list(stream_generate(model, tok, ids, GenerationSettings(max_new_tokens=8)))
    final = events[-1]
    assert final.done and not any(e.done for e in events[:-1])
    assert "".join(e.delta for e in events) == final.text
    t = final.timings
    assert t.prompt_tokens == ids.shape[1] == t.context_tokens
    assert 1 <= t.new_tokens <= 8
    assert 0 < t.ttft_s <= t.total_s
    if final.finish_reason == "length":
        assert t.new_tokens == 8 and t.decode_tokens_per_s > 0


def test_greedy_matches_transformers_generate(tiny):
    model, tok = tiny
    ids = prompt_ids(tok, "the model is")
    ours = generate_text(model, tok, ids, GenerationSettings(max_new_tokens=6, stop_token_ids=()))
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=3)
    ref_tokens = [t for t in ref[0, ids.shape[1]:].tolist()]
    if tok.eos_token_id in ref_tokens:
        ref_tokens = ref_tokens[:ref_tokens.index(tok.eos_token_id)]
    assert ours.text == tok.decode(ref_tokens, skip_special_tokens=True)


def test_stop_token_ends_generation(tiny):
    model, tok = tiny
    ids = prompt_ids(tok, "one two three")
    first = generate_text(model, tok, ids, GenerationSettings(max_new_tokens=1))
    first_id = tok(first.text, add_special_tokens=False).input_ids[0]
    stopped = generate_text(model, tok, ids, GenerationSettings(max_new_tokens=5, stop_token_ids=(first_id,)))
    assert stopped.finish_reason == "eos" and stopped.timings.new_tokens == 0 and stopped.text == ""


def test_sampling_is_reproducible_with_a_seed(tiny):
    model, tok = tiny
    ids = prompt_ids(tok, "learn rate")
    settings = GenerationSettings(max_new_tokens=10, temperature=1.5, top_k=0, seed=7)
    a = generate_text(model, tok, ids, settings).text
    b = generate_text(model, tok, ids, settings).text
    others = {generate_text(model, tok, ids, GenerationSettings(max_new_tokens=10, temperature=1.5, top_k=0,
                                                                 seed=s)).text for s in range(5)}
    assert a == b
    assert len(others) > 1  # different seeds really sample


def test_passed_cache_is_extended_in_place(tiny):
    from transformers import DynamicCache
    model, tok = tiny
    prefix = prompt_ids(tok, "the river")
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=prefix, past_key_values=cache, use_cache=True)
    suffix = tok("city", return_tensors="pt", add_special_tokens=False).input_ids
    event = generate_text(model, tok, suffix, GenerationSettings(max_new_tokens=3, stop_token_ids=()), cache)
    assert event.timings.prompt_tokens == suffix.shape[1]
    assert event.timings.context_tokens == prefix.shape[1] + suffix.shape[1]
    assert cache.get_seq_length() >= prefix.shape[1] + suffix.shape[1]


@pytest.mark.parametrize("field, value", [("max_new_tokens", 0), ("temperature", -1.0), ("top_p", 0.0),
                                          ("top_k", -2), ("repetition_penalty", 0.0)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        GenerationSettings(**{field: value})


@pytest.mark.parametrize("field, value", [("temperature", float("nan")), ("temperature", float("inf")),
                                          ("top_p", float("nan")), ("repetition_penalty", float("nan")),
                                          ("repetition_penalty", float("inf")), ("max_new_tokens", 10**9)])
def test_nan_inf_and_huge_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        GenerationSettings(**{field: value})


def test_cli_refuses_temperature_nan(capsys):
    from lab.cli import main
    assert main(["generate", "--prompt", "hi", "--temperature", "nan"]) == 2
    assert "temperature must be a finite number" in capsys.readouterr().err


def test_an_overlong_model_id_gets_the_usual_message(tmp_path):
    from lab.core.errors import ModelLoadError
    from lab.inference.models import ModelSpec, resolve_model_path
    for call in (lambda: ModelSpec("a" * 5000), lambda: resolve_model_path("a/" * 2500, tmp_path)):
        with pytest.raises(ModelLoadError, match="neither an existing local folder nor a valid Hugging Face id"):
            call()
    assert ModelSpec("a" * 1024).key == "a" * 1024 + "|full"  # the limit itself is an ordinary id
