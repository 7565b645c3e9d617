"""Small helpers every tab uses to turn engine errors into messages a user can act on."""

from __future__ import annotations

import gradio as gr

from lab.core.errors import USER_ERRORS


def user_error(exc: Exception) -> gr.Error:
    """A gr.Error carrying the engine's own message (KeyError would otherwise show quotes)."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return gr.Error(message, title=type(exc).__name__.replace("Error", " error").strip())


GPU = {"concurrency_id": "gpu", "concurrency_limit": 4}
"""Event options for handlers that run models: they share one gradio queue; the session
manager's own queue then serialises the actual accelerator work."""

POLL = {"concurrency_limit": None, "show_progress": "hidden", "queue": False}
"""Event options for status polling: never waits behind model work."""

__all__ = ["GPU", "POLL", "USER_ERRORS", "user_error"]


def with_queue_position(engine, caller: str, items, poll_s: float = 0.5):
    """Run a model stream in a worker thread and yield ('item', x) as it produces, or
    ('waiting', position) while it is still queued behind other GPU work, so a UI can say
    where the user stands. Errors raised by the stream are re-raised here."""
    import queue
    import threading

    box: queue.Queue = queue.Queue()
    done = object()

    def work():
        try:
            for item in items:
                box.put(("item", item))
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            box.put(("error", exc))
        finally:
            box.put(("end", done))

    threading.Thread(target=work, daemon=True, name=f"stream-{caller}").start()
    while True:
        try:
            kind, value = box.get(timeout=poll_s)
        except queue.Empty:
            position = engine.sessions.queue.position(caller)
            if position:
                yield "waiting", position
            continue
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield kind, value
