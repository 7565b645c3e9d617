"""LLM Lab: compare how a language model is given knowledge and behaviour, in the browser.

    python app.py            # serves http://127.0.0.1:7860 (GRADIO_SERVER_NAME/PORT override)

`demo` is built at import, as Hugging Face Spaces expect; building it loads no model.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import gradio as gr
from gradio import networking
from starlette.middleware import Middleware

from lab.core.errors import USER_ERRORS
from lab.core.signin import SignIn, SignInMiddleware
from lab.engine import Engine
from tabs import arena, battles, compare, explain, history, system, train

INTRO = ("# LLM Lab\nGive a language model knowledge and behaviour — retrieval, cache-augmented generation, "
         "full context, fine-tuning — and measure what each costs.")


def build_app(engine: Engine) -> gr.Blocks:
    # Gradio's own upload cache: files older than an hour are deleted every hour (rejected uploads included).
    with gr.Blocks(title="LLM Lab", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            compare.build(engine, demo)
            arena.build(engine)
            battles.build(engine)
            history.build(engine)
            train.build(engine)
            explain.build(engine)
            system.build(engine)
        # A closed or reloaded page cancels every model request it still has (waiting ones leave their queue,
        # decoding ones stop at the next token); gradio calls this when the page's connection ends.
        def page_closed(request: gr.Request) -> None:
            engine.requests.cancel_page(request.session_hash)

        demo.unload(page_closed)
    return demo


def sign_in_options(engine: Engine) -> dict:
    """launch() arguments for sign-in: gradio's auth as a throttled, logged check of plain or hashed passwords and
    the middleware that gives it the client's address and answers a lock with 429 (lab/core/signin.py)."""
    users = engine.uploads.sign_in_users()
    if not users:
        return {"auth": None, "auth_message": None}
    return {"auth": SignIn(users), "auth_message": "LLM Lab sign-in",
            "app_kwargs": {"middleware": [Middleware(SignInMiddleware)]}}


def patient_url_ok(check: Callable[[str], bool], patience_s: float = 60.0) -> Callable[[str], bool]:
    """`check` (gradio's url_ok), asked again until it succeeds or `patience_s` has passed.

    Before serving, gradio asks the new server for its page and refuses to start ("When localhost is not
    accessible, a shareable link must be created") when the first attempt takes over 3 s. On a shared box whose
    CPUs are busy with training jobs, or with the model loading beside the server, that first page can take
    longer: the server is fine, only slow to answer once."""
    def ok(url: str) -> bool:
        deadline = time.monotonic() + patience_s
        while not check(url):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        return True
    ok.patient = True  # type: ignore[attr-defined]
    return ok


def launch(demo: gr.Blocks, engine: Engine, port: int | None = None, **kwargs):
    """Start serving with the lab's settings (sign-in, queue) applied."""
    # The job runner starts with the app: queued jobs start without anyone opening the job list, and the memory
    # of jobs that kept running through a restart is reserved again. A data directory the lab cannot write is
    # reported in the UI at the first request that needs it, so the app still starts.
    try:
        engine.jobs.start()
    except USER_ERRORS as exc:
        logging.getLogger("lab").warning("job runner not started: %s", exc)
    if not getattr(networking.url_ok, "patient", False):
        networking.url_ok = patient_url_ok(networking.url_ok)
    return demo.queue(default_concurrency_limit=4).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **sign_in_options(engine), theme=gr.themes.Soft(),
        max_file_size=int(engine.settings.max_upload_mb * 2**20), **kwargs)  # LAB_MAX_UPLOAD_MB


def preload(engine: Engine) -> None:
    """Load the default model in the background so the first question does not wait for it."""
    try:
        engine.models.load()
    except USER_ERRORS as exc:  # the UI shows the same message when someone asks
        logging.getLogger("lab").warning("could not preload %s: %s", engine.settings.model_id, exc)


engine = Engine()
demo = build_app(engine)


if __name__ == "__main__":
    threading.Thread(target=preload, args=(engine,), daemon=True).start()
    launch(demo, engine)
