"""Small helpers every tab uses to turn engine errors into messages a user can act on."""

from __future__ import annotations

import gradio as gr

from lab.core.errors import USER_ERRORS


def user_error(exc: Exception) -> gr.Error:
    """A gr.Error carrying the engine's own message (KeyError would otherwise show quotes)."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return gr.Error(message, title=type(exc).__name__.replace("Error", " error").strip())


GPU = {"concurrency_id": "gpu", "concurrency_limit": None}
"""Event options for handlers that run models. Gradio's own queue is first come, first served, so it lets every
request through at once: the session manager decides who goes next, round-robin over users (its batch gates and
exclusive queue, lab.inference.fairness), and refuses a user's request beyond LAB_MAX_REQUESTS_PER_USER in flight.
`with_queue_position` shows a waiting request its place. A handler holds a worker thread only while it hands on
the next update (at most `poll_s`), so waiting requests do not use up gradio's threads."""

POLL = {"concurrency_limit": None, "show_progress": "hidden", "queue": False}
"""Event options for status polling: never waits behind model work."""

__all__ = ["GPU", "POLL", "USER_ERRORS", "user_error", "waiting_note"]


def waiting_note(engine, position: int | str) -> str:
    """Where a request stands in the model queue, naming the device the models really run on (on a machine
    without a GPU, "waiting for the GPU" would send people looking for one); a str is what the request waits
    for instead (a training job's memory, engine.requests.memory_wait), shown as it is."""
    if isinstance(position, str):
        return f"⏳ {position}"
    device = engine.device.device
    where = "GPU" if device == "cuda" else device.upper()
    return f"⏳ waiting for the {where}: position {position} in the queue"


def with_queue_position(engine, caller: str, items, poll_s: float = 0.5):
    """Run a model stream in a worker thread and yield ('item', x) as it produces, or
    ('waiting', position) while it is still queued behind other GPU work, or ('waiting', note) while
    it waits for memory a training job holds (engine.requests.memory_wait), so a UI can say where the user
    stands. Errors raised by the stream are re-raised here. When this generator
    is closed (the browser went away), every request of `caller` is cancelled: one still waiting leaves its queue
    within half a second, one decoding stops at its next token and frees its place in the batch."""
    import queue
    import threading

    box: queue.Queue = queue.Queue()
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in items:
                if stop.is_set():
                    break
                box.put(("item", item))
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            box.put(("error", exc))
        finally:
            items.close()  # the stream is a generator: its cleanup runs here, in the thread that ran it
            box.put(("end", done))

    threading.Thread(target=work, daemon=True, name=f"stream-{caller}").start()
    try:
        while True:
            try:
                kind, value = box.get(timeout=poll_s)
            except queue.Empty:
                position = engine.requests.queue_position(caller)
                if position:
                    yield "waiting", position
                # it holds the slot, not the memory
                elif position == 0 and (note := engine.requests.memory_wait(caller)):
                    yield "waiting", note
                continue
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield kind, value
    finally:
        stop.set()
        engine.requests.cancel_caller(caller)
