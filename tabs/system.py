"""System tab: device, memory, what the session manager holds, load/unload, and a Playground.

    python app.py   # then open the System tab
"""

from __future__ import annotations

import gradio as gr

from lab.engine import Engine
from lab.core.spaces import gpu
from lab.inference.generate import GenerationSettings
from tabs.common import GPU, POLL, USER_ERRORS, user_error, with_queue_position

TABLE_HEADERS = ["name", "kind", "MB", "idle s", "in use"]


def device_markdown(engine: Engine) -> str:
    info = engine.info()
    mem = info["memory_mb"]
    lines = [f"**Device** `{info['device']}` · dtype `{info['dtype']}` · attention `{info['attn_implementation']}`"
             + (f" · {info['gpu_name']}" if info["gpu_name"] else ""),
             f"**Host RAM** {mem['ram_available']:,} MB free of {mem['ram_total']:,} MB · this process "
             f"{mem['process_rss']:,} MB"]
    if "gpu_total" in mem:
        lines.append(f"**GPU memory** {mem['gpu_free']:,} MB free of {mem['gpu_total']:,} MB "
                     f"(torch holds {mem['gpu_allocated']:,} MB)")
    session = info["session"]
    queue = session["queue"]
    lines.append(f"**Session manager** {session['used_mb']:,} MB held of a {session['budget_mb']:,} MB budget · "
                 f"exclusive queue (loading, adapters, CAG): "
                 f"{'busy (' + queue['running'] + ')' if queue['running'] else 'idle'}"
                 + (f", {len(queue['waiting'])} waiting" if queue["waiting"] else ""))
    lines += [engine_line(e) for e in session["engines"]]
    lines.append(f"**Default model** `{info['default_model']}` · data in `{info['data_dir']}`")
    return "\n\n".join(lines)


def engine_line(e: dict) -> str:
    """One model's batching engine: what it runs now and how fast."""
    return (f"**Batching** `{e['model']}` ({e['state']}): {e['running']} running · {e['waiting']} waiting · "
            f"batch size {e['batch_size']} · {e['tokens_per_s']:,.1f} tokens/s · {e['requests_done']:,} answered · "
            f"paged cache {e['cache_mb']:,} MB ({e['cache_tokens']:,} tokens"
            f"{', prefix sharing' if e['prefix_sharing'] else ''})")


def held_rows(engine: Engine) -> list[list]:
    return [[e["label"], e["kind"], e["mb"], e["idle_s"],
             "yes" if e["pinned"] else ""] for e in engine.stats()["entries"]]


def timings_markdown(t) -> str:
    return (f"**{t.new_tokens}** new tokens · time to first token **{t.ttft_s:.3f} s** · "
            f"decode **{t.decode_tokens_per_s:.1f} tok/s** · total **{t.total_s:.2f} s** · "
            f"prompt {t.prompt_tokens} tokens" + (f" · queued {t.queue_s:.2f} s" if t.queue_s >= 0.01 else ""))


def build(engine: Engine) -> None:
    def refresh():
        keys = [e["key"] for e in engine.stats()["entries"]]
        return device_markdown(engine), held_rows(engine), gr.update(choices=keys, value=keys[0] if keys else None)

    def load(model_id: str, four_bit: bool):
        try:
            loaded = engine.load(model_id, four_bit)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        status = (f"Loaded `{loaded.spec.model_id}` ({loaded.nbytes / 2**20:,.0f} MB, "
                  f"window {loaded.context_window:,} tokens) in {loaded.load_s:.1f} s.")
        return status, *refresh()

    def unload(key: str | None):
        if not key:
            raise gr.Error("Nothing selected to unload.")
        status = f"Unloaded `{key}`." if engine.unload(key) else f"`{key}` was not loaded."
        return status, *refresh()

    def playground(prompt: str, max_new_tokens: float, temperature: float, model_id: str):
        try:
            settings = GenerationSettings(max_new_tokens=int(max_new_tokens), temperature=float(temperature))
            caller = engine.sessions.new_caller("playground")
            stream = engine.generate(prompt, settings, model_id=model_id or None, caller=caller)
            for kind, event in with_queue_position(engine, caller, stream):
                if kind == "waiting":
                    yield "", f"⏳ waiting for the GPU: position {event} in the queue"
                else:
                    yield event.text, timings_markdown(event.timings) + ("" if event.done else " · streaming…")
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    with gr.Tab("System", id="system"):
        gr.Markdown("What this process holds and runs on. Every browser session shares these models; "
                    "nothing is loaded twice.")
        device_md = gr.Markdown(device_markdown(engine), elem_id="system-device")
        table = gr.Dataframe(headers=TABLE_HEADERS, value=held_rows(engine), label="Loaded in the session manager",
                             interactive=False, elem_id="system-loaded")
        with gr.Row():
            model_id = gr.Textbox(value=engine.settings.model_id, label="Model id",
                                  info="'embedded' (SmolLM2-135M, offline), a local folder, or a Hugging Face id "
                                       "where the Hub is reachable", scale=3)
            four_bit = gr.Checkbox(value=engine.settings.load_in_4bit, label="4-bit NF4 (bitsandbytes)", scale=1)
            load_btn = gr.Button("Load", variant="primary", scale=1)
        with gr.Row():
            unload_key = gr.Dropdown(choices=[], label="Loaded entry", allow_custom_value=True, scale=3)
            unload_btn = gr.Button("Unload", scale=1)
        status = gr.Markdown(elem_id="system-status")

        gr.Markdown("### Playground\nOne prompt, streamed with its timings. Requests on a model share its batching "
                    "engine with everyone else's (one forward pass for all); a model's first request starts it.")
        prompt = gr.Textbox(label="Prompt", lines=3, placeholder="What is the capital of France?",
                            elem_id="playground-prompt")
        with gr.Row():
            max_new = gr.Number(value=128, precision=0, label="max_new_tokens",
                                info=f"1 to {engine.settings.max_new_tokens_limit}; generation also stops at the end token")
            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="temperature (0 = greedy)")
        run_btn = gr.Button("Generate", variant="primary", elem_id="playground-run")
        answer = gr.Textbox(label="Answer", lines=6, interactive=False, elem_id="playground-answer")
        timings = gr.Markdown(elem_id="playground-timings")

        outputs = [device_md, table, unload_key]
        load_btn.click(load, [model_id, four_bit], [status, *outputs], api_name="load_model", **GPU)
        unload_btn.click(unload, [unload_key], [status, *outputs], api_name="unload_model", **POLL)
        run_btn.click(gpu(playground), [prompt, max_new, temperature, model_id], [answer, timings],
                      api_name="playground", **GPU).then(refresh, None, outputs, **POLL)
        prompt.submit(gpu(playground), [prompt, max_new, temperature, model_id], [answer, timings],
                      api_visibility="private", **GPU)
        def system_stats() -> dict:
            """What the session manager holds and who is using or waiting for the GPU."""
            return engine.stats()

        gr.api(system_stats, api_name="system_stats", concurrency_limit=None)
        # Choices only (no value) so a selection the user is making survives the refresh.
        gr.Timer(3).tick(lambda: (device_markdown(engine), held_rows(engine),
                                  gr.update(choices=[e["key"] for e in engine.stats()["entries"]])),
                         None, outputs, **POLL)
