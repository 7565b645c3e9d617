"""LLM Lab: compare how a language model is given knowledge and behaviour, in the browser.

    python app.py            # serves http://127.0.0.1:7860 (GRADIO_SERVER_NAME/PORT override)

`demo` is built at import, as Hugging Face Spaces expect; building it loads no model.
"""

from __future__ import annotations

import logging
import os
import threading

import gradio as gr

from lab.core.errors import USER_ERRORS
from lab.engine import Engine
from tabs import arena, compare, explain, system, train

INTRO = ("# LLM Lab\nGive a language model knowledge and behaviour — retrieval, cache-augmented generation, "
         "full context, fine-tuning — and measure what each costs.")


def build_app(engine: Engine) -> gr.Blocks:
    with gr.Blocks(title="LLM Lab") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            compare.build(engine)
            arena.build(engine)
            train.build(engine)
            explain.build(engine)
            system.build(engine)
    return demo


def launch(demo: gr.Blocks, engine: Engine, port: int | None = None, **kwargs):
    """Start serving with the lab's settings (sign-in, queue) applied."""
    auth = engine.sign_in_users() or None
    return demo.queue(default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        auth=auth, auth_message="LLM Lab sign-in" if auth else None,
        theme=gr.themes.Soft(), **kwargs)


def preload(engine: Engine) -> None:
    """Load the default model in the background so the first question does not wait for it."""
    try:
        engine.load()
    except USER_ERRORS as exc:  # the UI shows the same message when someone asks
        logging.getLogger("lab").warning("could not preload %s: %s", engine.settings.model_id, exc)


engine = Engine()
demo = build_app(engine)


if __name__ == "__main__":
    threading.Thread(target=preload, args=(engine,), daemon=True).start()
    launch(demo, engine)
