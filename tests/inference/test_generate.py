"""The streaming generator: timings, greedy determinism, stops, sampling, incremental text, and bad settings."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lab.inference.generate import GenerationSettings, TextStream, generate_text, prompt_ids, stream_generate


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


MIXED_TEXT = ["The café in Zürich serves crème brûlée — twice.", "東京の天気は晴れです。", "Привет, мир! 🙂🚀 done",
              "naïve façade,  two  spaces and\nnew lines\t tabs"]


def trained_tokenizer(kind: str):
    """A small tokenizer trained on MIXED_TEXT. byte-level (SmolLM2's kind): too few merges to cover every
    character, so multi-byte characters are split over tokens. metaspace (SentencePiece's kind): a decode drops the
    leading space of its first token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    raw = Tokenizer(models.BPE())
    if kind == "byte-level":
        raw.pre_tokenizer, raw.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        raw.pre_tokenizer, raw.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
        alphabet = sorted(set("".join(MIXED_TEXT).replace(" ", "\u2581")))
    raw.train_from_iterator(MIXED_TEXT, trainers.BpeTrainer(vocab_size=len(alphabet) + 40, initial_alphabet=alphabet,
                                                            special_tokens=["<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>")


def assert_streams_like_the_full_decode(tok, ids: list[int], step: int) -> None:
    """Fed `step` ids at a time (a batch output may carry several), the streamed text is a prefix of the full decode
    at every point, is the pieces joined, and ends as the full decode."""
    stream, pieces = TextStream(tok), []
    for i in range(0, len(ids), step):
        pieces.append(stream.add(ids[i:i + step]))
        full = tok.decode(ids[:i + step], skip_special_tokens=True)
        assert full.startswith(stream.text) and "".join(pieces) == stream.text
        assert "\ufffd" not in stream.text  # half a character never goes out
    assert stream.text == stream.full_text() == tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["byte-level", "metaspace"])
def test_text_stream_equals_the_full_decode(kind):
    tok = trained_tokenizer(kind)
    for text in MIXED_TEXT:
        ids = tok(text, add_special_tokens=False).input_ids
        if kind == "byte-level":
            assert "\ufffd" in "".join(tok.decode([i]) for i in ids) or text.isascii()  # characters really are split
        for step in (1, 3):
            assert_streams_like_the_full_decode(tok, ids + [tok.eos_token_id], step)


def test_text_stream_on_a_word_level_tokenizer_that_joins_with_spaces(tiny):
    _, tok = tiny
    ids = tok("what is the capital of france ? paris", add_special_tokens=False).input_ids
    assert_streams_like_the_full_decode(tok, ids, 1)


@pytest.mark.slow
def test_text_stream_equals_the_full_decode_on_smollm2():
    """The embedded model's own tokenizer (byte-level BPE) on English and non-ASCII text."""
    from transformers import AutoTokenizer

    from lab.core.settings import LabSettings
    from lab.inference.models import materialise_embedded
    tok = AutoTokenizer.from_pretrained(materialise_embedded(LabSettings().subdir("models")))
    text = " ".join(MIXED_TEXT) + " It's 25°C — “quoted” ½ ∑ señor Ελλάδα नमस्ते 😀👍🏽 done."
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) > len(text) // 4 and tok.decode(ids) == text
    for step in (1, 2, 5):
        assert_streams_like_the_full_decode(tok, ids, step)


def test_stream_generate_pieces_join_to_the_final_text_with_a_split_character(tiny):
    """A model whose next token is always the first half of a two-byte character, then its second half."""
    model, _ = tiny
    tok = trained_tokenizer("byte-level")
    first, second = tok.convert_tokens_to_ids(["Ã", "©"])  # é is C3 A9: ByteLevel writes those bytes as Ã and ©
    assert tok.decode([first]) == "\ufffd" and tok.decode([first, second]) == "é"

    class Alternating(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config, self.generation_config, self.calls = model.config, model.generation_config, 0
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, **_):
            logits = torch.zeros(1, input_ids.shape[1], len(tok))
            logits[..., first if self.calls % 2 == 0 else second] = 1.0
            self.calls += 1
            return type("Out", (), {"logits": logits})()

    events = list(stream_generate(Alternating(), tok, torch.tensor([[first]]), GenerationSettings(max_new_tokens=5)))
    assert [e.text for e in events[:-1]] == ["é", "éé"]  # nothing went out for a half character
    assert events[-1].done and events[-1].text == "éé\ufffd" and "".join(e.delta for e in events) == events[-1].text


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
