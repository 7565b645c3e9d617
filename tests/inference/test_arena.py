"""Arena engine: columns stream in turn, adapters share one base, histories and transcripts."""

from __future__ import annotations

import json

import pytest
from peft import LoraConfig, get_peft_model

from lab.inference.arena import (
    ArenaColumn,
    choice_label,
    model_choices,
    parse_choice,
    stream_arena,
    transcript_json,
    transcript_markdown,
)
from lab.inference.generate import GenerationSettings
from support import build_tiny_llama, build_tiny_tokenizer


@pytest.fixture
def engine_with_adapters(tiny_engine):
    root = tiny_engine.settings.subdir("adapters")
    for i, name in enumerate(("alpha", "beta")):
        model = get_peft_model(build_tiny_llama(len(build_tiny_tokenizer())),
                               LoraConfig(r=2 + 2 * i, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        model.save_pretrained(root / name)
    return tiny_engine


def finals(engine, prompt, columns, histories=None):
    return [r for r in stream_arena(engine.runtime, prompt, columns, histories) if r.done]


def test_two_adapters_and_base_share_one_base(engine_with_adapters):
    engine = engine_with_adapters
    base = engine.settings.model_id
    settings = GenerationSettings(max_new_tokens=4)
    assert model_choices(engine.runtime) == [base, choice_label(base, "alpha"), choice_label(base, "beta")]
    columns = [ArenaColumn(c, settings) for c in model_choices(engine.runtime)]
    replies = finals(engine, "what is the capital", columns)
    assert [r.error for r in replies] == [None, None, None]
    assert engine.sessions.load_counts == {engine.runtime.spec().key: 1}
    entries = engine.devices.stats()["entries"]
    model_bytes = sum(e["bytes"] for e in entries if e["kind"] == "model")
    adapter_bytes = sum(e["bytes"] for e in entries if e["kind"] == "adapter")
    assert len([e for e in entries if e["kind"] == "model"]) == 1
    assert len([e for e in entries if e["kind"] == "adapter"]) == 2
    assert 0 < adapter_bytes < model_bytes  # two adapters cost less than one more base


def test_a_failing_column_reports_and_the_others_answer(tiny_engine):
    columns = [ArenaColumn("nobody/missing", GenerationSettings(max_new_tokens=2)),
               ArenaColumn(tiny_engine.settings.model_id, GenerationSettings(max_new_tokens=2))]
    bad, good = finals(tiny_engine, "the model", columns)
    assert "Hub cannot be reached" in bad.error
    assert good.error is None and good.timings.new_tokens >= 0


def test_chat_history_enters_the_prompt(tiny_engine):
    column = [ArenaColumn(tiny_engine.settings.model_id, GenerationSettings(max_new_tokens=2))]
    first = finals(tiny_engine, "the model", column)[0]
    history = [[{"role": "user", "content": "the model"}, {"role": "assistant", "content": first.text or "one"}]]
    second = finals(tiny_engine, "the model", column, history)[0]
    assert second.timings.context_tokens > first.timings.context_tokens


def test_bad_requests_are_refused_before_running(tiny_engine):
    with pytest.raises(ValueError, match="prompt is empty"):
        list(stream_arena(tiny_engine.runtime, " ", [ArenaColumn("embedded")]))
    with pytest.raises(ValueError, match="1 to 4 columns"):
        list(stream_arena(tiny_engine.runtime, "hi", [ArenaColumn("embedded")] * 5))
    with pytest.raises(ValueError, match="no model chosen"):
        parse_choice("  ")
    unknown = finals(tiny_engine, "hi", [ArenaColumn(choice_label(tiny_engine.settings.model_id, "ghost"))])[0]
    assert "Unknown adapter 'ghost'" in unknown.error


def test_transcripts_hold_every_column():
    columns = [ArenaColumn("embedded", GenerationSettings(temperature=0.5)), ArenaColumn("other")]
    histories = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], []]
    data = json.loads(transcript_json(columns, histories))
    assert [c["choice"] for c in data["columns"]] == ["embedded", "other"]
    assert data["columns"][0]["messages"][1]["content"] == "hello"
    assert data["columns"][0]["settings"]["temperature"] == 0.5
    md = transcript_markdown(columns, histories)
    assert "## Column 1: embedded" in md and "**assistant**: hello" in md
