"""Batched generation: greedy answers are the same alone or batched, per-request settings hold, cancelling frees the
request, work that needs the model alone pauses the batch, and unloading a model stops its engine.

    .venv/bin/python -m pytest -q tests/inference/test_batching.py
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from lab.core.errors import ModelLoadError
from lab.inference.batching import base_model
from lab.inference.generate import GenerationSettings, generate_text, prompt_ids
from lab.inference.session import engine_key
from support import save_loud_adapter, wait_until
from tabs.common import with_queue_position

PROMPTS = ["what is the capital of france ?", "the model", "train the lora rank and alpha", "one two three four five",
           "the river of the city", "a question of data"]


def ids_of(engine, prompt: str) -> list[int]:
    return prompt_ids(engine.sessions.model(engine.runtime.spec()).tokenizer, prompt)[0].tolist()


def final(events):
    *_, last = events
    assert last.done
    return last


def run_together(batch, jobs: list[tuple[list[int], GenerationSettings]]) -> list:
    """Submit every job while the engine is paused, so they all enter the same first batch; their final events."""
    results: list = [None] * len(jobs)

    def consume(i, ids, settings):
        results[i] = final(batch.stream(ids, settings))

    with batch.paused():
        threads = [threading.Thread(target=consume, args=(i, *job)) for i, job in enumerate(jobs)]
        for t in threads:
            t.start()
        wait_until(lambda: batch.stats()["waiting"] == len(jobs))
    for t in threads:
        t.join(60)
    return results


@pytest.fixture
def batch(tiny_engine):
    return tiny_engine.sessions.engine_for(tiny_engine.runtime.spec())


def test_greedy_answers_are_the_same_alone_and_batched(tiny_engine, batch):
    settings = GenerationSettings(max_new_tokens=12)
    jobs = [(ids_of(tiny_engine, p), settings) for p in PROMPTS]
    alone = [final(batch.stream(ids, s)) for ids, s in jobs]
    together = run_together(batch, jobs)
    loaded = tiny_engine.sessions.model(tiny_engine.runtime.spec())
    plain = [generate_text(loaded.model, loaded.tokenizer, torch.tensor([ids]), s) for ids, s in jobs]
    for a, b, c in zip(alone, together, plain):
        assert (a.text, a.timings.new_tokens, a.finish_reason) == (b.text, b.timings.new_tokens, b.finish_reason)
        assert (a.text, a.timings.new_tokens, a.finish_reason) == (c.text, c.timings.new_tokens, c.finish_reason)
    assert batch.stats()["requests_done"] >= 2 * len(jobs)
    t = together[0].timings
    assert t.prompt_tokens == len(jobs[0][0]) and t.ttft_s > 0 and t.queue_s >= 0 and t.total_s >= t.ttft_s


def test_per_request_sampling_settings_are_honoured(tiny_engine, batch):
    ids = ids_of(tiny_engine, "the model")
    greedy = GenerationSettings(max_new_tokens=10)
    reference = final(batch.stream(ids, greedy)).text
    hot = GenerationSettings(max_new_tokens=10, temperature=2.0, top_k=0)
    top1 = GenerationSettings(max_new_tokens=10, temperature=2.0, top_k=1)  # only the argmax is left to draw
    short = GenerationSettings(max_new_tokens=3)
    sampled = set()
    for _ in range(4):
        g, s, t1, sh = run_together(batch, [(ids, greedy), (ids, hot), (ids, top1), (ids, short)])
        assert g.text == reference and t1.text == reference  # greedy and top_k=1 stay fixed beside a sampled one
        assert sh.timings.new_tokens == 3 or sh.finish_reason == "eos"
        assert g.timings.new_tokens == 10 or g.finish_reason == "eos"
        sampled.add(s.text)
    assert len(sampled) > 1  # temperature 2 over the whole vocabulary varies between runs


def test_closing_the_stream_cancels_the_request(tiny_engine, batch):
    ids = ids_of(tiny_engine, "the model")
    done_before = batch.stats()["requests_done"]
    stream = batch.stream(ids, GenerationSettings(max_new_tokens=200))
    first = next(stream)
    assert not first.done
    stream.close()
    wait_until(lambda: batch.stats()["running"] == 0 and batch.stats()["waiting"] == 0)
    assert batch.stats()["requests_done"] == done_before  # it was dropped, not run to its end
    assert final(batch.stream(ids, GenerationSettings(max_new_tokens=3))).timings.new_tokens <= 3  # still serving


def test_a_browser_going_away_cancels_through_the_queue_helper(tiny_engine, batch):
    caller = tiny_engine.sessions.new_caller("test")
    ui = with_queue_position(tiny_engine, caller,
                             tiny_engine.models.generate("the model", GenerationSettings(max_new_tokens=200), caller=caller),
                             poll_s=0.05)
    kind, event = next(ui)
    assert kind == "item" and not event.done
    ui.close()  # what gradio does when the page is closed
    wait_until(lambda: batch.stats()["running"] == 0 and batch.stats()["waiting"] == 0)


@pytest.fixture
def adapter(tiny_engine, tiny_model_dir):
    """A LoRA adapter that changes the answers, saved as <data>/adapters/loud."""
    return "loud", str(save_loud_adapter(tiny_model_dir, tiny_engine.settings.subdir("adapters") / "loud"))


def test_an_adapter_request_pauses_the_batch_and_base_answers_stay_the_base(tiny_engine, batch, adapter):
    sessions, spec = tiny_engine.sessions, tiny_engine.runtime.spec()
    settings = GenerationSettings(max_new_tokens=150)
    jobs = [(ids_of(tiny_engine, p), settings) for p in PROMPTS[:3]]
    base_alone = [final(batch.stream(ids, s)).text for ids, s in jobs]
    question = torch.tensor([ids_of(tiny_engine, "what is the capital of france ?")])
    with sessions.lend(spec, GenerationSettings(max_new_tokens=8), "ref", adapter) as (_, run):
        adapter_alone = final(run(question)).text
    assert adapter_alone != final(batch.stream(question[0].tolist(), GenerationSettings(max_new_tokens=8))).text

    # Slow each forward pass a little so the base requests are surely still decoding when the adapter runs.
    layer = sessions.model(spec).model.get_base_model().model.layers[0]
    hook = layer.register_forward_pre_hook(lambda *_: time.sleep(0.003))
    started, results = threading.Barrier(len(jobs) + 1), [None] * len(jobs)

    def consume(i, ids, s):
        stream = batch.stream(ids, s)
        first = next(stream)
        started.wait(30)
        results[i] = final([first, *stream]).text

    threads = [threading.Thread(target=consume, args=(i, *job)) for i, job in enumerate(jobs)]
    try:
        for t in threads:
            t.start()
        started.wait(30)
        with sessions.lend(spec, GenerationSettings(max_new_tokens=8), "mid", adapter) as (_, run):
            assert batch.stats()["running"] == len(jobs)  # in flight, parked at a step boundary
            adapter_mid = final(run(question)).text
        for t in threads:
            t.join(120)
    finally:
        hook.remove()
    assert adapter_mid == adapter_alone
    assert results == base_alone
    assert sessions.queue.snapshot() == {"running": None, "waiting": []}


def test_settings_the_batch_cannot_honour_run_alone(tiny_engine, batch):
    settings = GenerationSettings(max_new_tokens=8, repetition_penalty=1.3)
    done_before = batch.stats()["requests_done"]
    event = final(tiny_engine.models.generate("the model", settings))
    loaded = tiny_engine.sessions.model(tiny_engine.runtime.spec())
    plain = generate_text(loaded.model, loaded.tokenizer, prompt_ids(loaded.tokenizer, "the model"), settings)
    assert event.text == plain.text
    assert batch.stats()["requests_done"] == done_before  # not through the engine
    with pytest.raises(ValueError, match="cannot be batched"):
        next(batch.stream([4, 5], settings))


def test_unloading_the_model_stops_its_engine_and_frees_its_bytes(tiny_engine, batch):
    sessions, spec = tiny_engine.sessions, tiny_engine.runtime.spec()
    entries = {e["key"]: e for e in tiny_engine.devices.stats()["entries"]}
    assert entries[engine_key(spec)]["kind"] == "engine" and entries[engine_key(spec)]["bytes"] == batch.nbytes > 0
    assert sessions.used_bytes >= batch.nbytes + entries[spec.key]["bytes"]
    stream = batch.stream(ids_of(tiny_engine, "the model"), GenerationSettings(max_new_tokens=200))
    next(stream)
    assert tiny_engine.models.unload(spec.key)
    assert sessions.used_bytes == 0 and tiny_engine.devices.stats()["engines"] == []
    with pytest.raises(ModelLoadError, match="unloaded"):
        list(stream)
    assert batch.wait_stopped(30)
    # The next request loads the model again and starts a fresh engine.
    assert final(tiny_engine.models.generate("the model", GenerationSettings(max_new_tokens=2))).done
    assert sessions.engine_for(spec) is not batch and sessions.engine_for(spec).running


@pytest.mark.parametrize("interval_s", [0.0, 60.0])
def test_partial_events_are_spaced_and_the_final_event_is_exact(tiny_engine, batch, monkeypatch, interval_s):
    """Held partial text goes out with the next event; the first text and the final event are never held."""
    import lab.inference.batching
    monkeypatch.setattr(lab.inference.batching, "EVENT_INTERVAL_S", interval_s)
    ids, settings = ids_of(tiny_engine, "one two three four five"), GenerationSettings(max_new_tokens=12)
    loaded = tiny_engine.sessions.model(tiny_engine.runtime.spec())
    # Steps 20 ms apart, so that the reader keeps up and sees every output (a backlog collapses to its last).
    hook = base_model(loaded.model).model.layers[0].register_forward_pre_hook(lambda *_: time.sleep(0.02))
    try:
        events = list(batch.stream(ids, settings))
    finally:
        hook.remove()
    plain = generate_text(loaded.model, loaded.tokenizer, torch.tensor([ids]), settings)
    *partial, last = events
    assert last.done and (last.text, last.timings.new_tokens) == (plain.text, plain.timings.new_tokens)
    assert "".join(e.delta for e in events) == last.text and all(e.delta for e in partial)
    assert all(b.text.startswith(a.text) for a, b in zip(events, events[1:]))
    if interval_s:  # only the first text comes before the final event
        assert [e.timings.new_tokens for e in partial] == [1][:plain.timings.new_tokens - 1]
    else:  # every token but the last has its own event
        assert [e.timings.new_tokens for e in partial] == list(range(1, plain.timings.new_tokens))


def test_engine_numbers_are_in_the_stats(tiny_engine, batch):
    final(batch.stream(ids_of(tiny_engine, "the model"), GenerationSettings(max_new_tokens=4)))
    stats = tiny_engine.devices.stats()["engines"][0]
    assert stats["state"] == "running" and stats["requests_done"] >= 1 and stats["prefix_sharing"]
    assert {"running", "waiting", "batch_size", "tokens_per_s", "cache_mb"} <= set(stats)


@pytest.mark.slow
def test_embedded_model_greedy_chat_answers_match_alone(embedded_engine):
    """Eight chat prompts on the real model: the batched answers equal `stream_generate` alone, token for token."""
    spec = embedded_engine.runtime.spec()
    batch = embedded_engine.sessions.engine_for(spec)
    loaded = embedded_engine.sessions.model(spec)
    prompts = ["What is the capital of France?", "Name three primary colours.", "What does a CPU do?",
               "Say hello in Spanish.", "What is 7 times 8?", "Why is the sky blue?", "What is LoRA?",
               "Give one tip for learning to code."]
    settings = GenerationSettings(max_new_tokens=24)
    jobs = [(prompt_ids(loaded.tokenizer, p)[0].tolist(), settings) for p in prompts]
    together = run_together(batch, jobs)
    with embedded_engine.sessions.exclusive(spec, "test"):
        alone = [generate_text(loaded.model, loaded.tokenizer, torch.tensor([ids]), s) for ids, s in jobs]
    for a, b in zip(alone, together):
        assert (a.text, a.timings.new_tokens, a.finish_reason) == (b.text, b.timings.new_tokens, b.finish_reason)
