"""GPU queue: a waiting request learns its position; polling never waits behind model work."""

from __future__ import annotations

import threading

import pytest

from lab.inference.generate import GenerationSettings
from tabs.common import waiting_note, with_queue_position


def hold_gpu(engine, name: str):
    """Hold the GPU slot from another thread until the returned event is set."""
    holding, release = threading.Event(), threading.Event()

    def hold():
        with engine.sessions.gpu_slot(name):
            holding.set()
            release.wait(60)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert holding.wait(10)
    return release, thread


def test_waiting_request_reports_its_position_then_runs(tiny_engine):
    release, holder = hold_gpu(tiny_engine, "someone-else")
    caller = tiny_engine.sessions.new_caller("test")
    stream = tiny_engine.models.generate("the model", GenerationSettings(max_new_tokens=2), caller=caller)
    seen = []
    for kind, value in with_queue_position(tiny_engine, caller, stream, poll_s=0.05):
        seen.append((kind, value))
        if kind == "waiting":
            release.set()
    holder.join(10)
    assert seen[0] == ("waiting", 1)
    assert seen[-1][0] == "item" and seen[-1][1].done


def test_a_request_says_it_waits_for_a_jobs_memory_then_runs(tiny_engine):
    """A training job's reservation fills the budget: the Playground says what it waits for, then answers."""
    sessions = tiny_engine.sessions
    sessions.reserve("job-1", sessions.budget_bytes - 1024)  # the tiny model no longer fits beside it
    caller = sessions.new_caller("test")
    stream = tiny_engine.models.generate("the model", GenerationSettings(max_new_tokens=2), caller=caller)
    seen = []
    for kind, value in with_queue_position(tiny_engine, caller, stream, poll_s=0.05):
        seen.append((kind, value))
        if kind == "waiting":
            sessions.release("job-1")  # the job ended
    assert seen[0][0] == "waiting" and "job-1" in seen[0][1]
    assert waiting_note(tiny_engine, seen[0][1]) == f"⏳ {seen[0][1]}"
    assert seen[-1][0] == "item" and seen[-1][1].done


def test_stream_errors_reach_the_caller(tiny_engine):
    caller = tiny_engine.sessions.new_caller("test")
    with pytest.raises(ValueError, match="prompt is empty"):
        list(with_queue_position(tiny_engine, caller, tiny_engine.models.generate("", caller=caller)))


@pytest.mark.slow
def test_status_poll_answers_while_a_generation_holds_the_gpu(tiny_engine):
    from gradio_client import Client

    from support import launch_app
    demo, url = launch_app(tiny_engine)
    release, holder = hold_gpu(tiny_engine, "long-generation")
    try:
        client = Client(url, verbose=False)
        # A real Playground request goes into the app and waits for the GPU behind the holder.
        job = client.submit("the model", 2, 0.0, tiny_engine.settings.model_id, api_name="/playground")
        while not tiny_engine.sessions.queue.snapshot()["waiting"]:
            assert not job.done(), job.exception()
            threading.Event().wait(0.05)
        result = {}
        poll = threading.Thread(target=lambda: result.update(client.predict(api_name="/system_stats")))
        poll.start()
        poll.join(60)
        assert not poll.is_alive(), "the status poll waited behind the GPU"
        assert result["queue"]["running"] == "long-generation"
        assert len(result["queue"]["waiting"]) == 1
        release.set()
        answer, timings = job.result(timeout=60)
        assert "new tokens" in timings
    finally:
        release.set()
        holder.join(10)
        demo.close()
