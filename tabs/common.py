"""Small helpers every tab uses to turn engine errors into messages a user can act on."""

from __future__ import annotations

import gradio as gr

from lab.engine import USER_ERRORS


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
