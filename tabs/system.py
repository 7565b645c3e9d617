"""System tab: device, memory, who holds what on each device, load/unload, and a Playground.

    python app.py   # then open the System tab
"""

from __future__ import annotations

import gradio as gr

from lab.core.spaces import gpu
from lab.engine import Engine
from lab.inference.generate import GenerationSettings
from tabs.common import GPU, POLL, USER_ERRORS, user_error, waiting_note, with_queue_position

TABLE_HEADERS = ["name", "kind", "MB", "idle s", "in use"]
REQUEST_HEADERS = ["id", "user", "kind", "model", "runs", "state", "age s"]
DEVICE_HEADERS = ["device", "memory", "training jobs (owner, kind, time left)", "served models", "reserved for jobs"]


def device_markdown(engine: Engine) -> str:
    info = engine.devices.info()
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
    lines += [gate_line(key, gate) for key, gate in session["gates"].items() if gate["running"] or gate["waiting"]]
    lines.append(f"**Default model** `{info['default_model']}` · data in `{info['data_dir']}`")
    return "\n\n".join(lines)


def engine_line(e: dict) -> str:
    """One model's batching engine: what it runs now and how fast."""
    return (f"**Batching** `{e['model']}` ({e['state']}): {e['running']} running · {e['waiting']} waiting · "
            f"batch size {e['batch_size']} · {e['tokens_per_s']:,.1f} tokens/s · {e['requests_done']:,} answered · "
            f"paged cache {e['cache_mb']:,} MB ({e['cache_tokens']:,} tokens"
            f"{', prefix sharing' if e['prefix_sharing'] else ''})")


def gate_line(key: str, gate: dict) -> str:
    """A model's fair gate (lab.inference.fairness): who has places in its batch and how many wait for one."""
    running = ", ".join(f"{user} {n}" for user, n in gate["running"].items()) or "nobody"
    return (f"**Fair share** `{key.split('|')[0]}`: places in the batch {sum(gate['running'].values())} of "
            f"{gate['slots']} (at most {gate['per_user']} per user; now {running}) · {len(gate['waiting'])} waiting, "
            "round-robin over users")


def held_rows(engine: Engine) -> list[list]:
    return [[e["label"], e["kind"], e["mb"], e["idle_s"],
             "yes" if e["pinned"] else ""] for e in engine.devices.stats()["entries"]]


def request_rows(engine: Engine) -> list[list]:
    """Every model request in flight (engine.requests.running_requests), oldest first."""
    return [[r["id"], r["user"], r["kind"], r["model"], r["what"], r["state"], r["age_s"]]
            for r in engine.requests.running_requests()]


def _time_left(seconds: float | None) -> str:
    return "time left unknown" if seconds is None else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s left"


def device_rows(engine: Engine) -> list[list]:
    """One row per device (engine.devices.device_holdings): what training jobs, served models and reservations hold
    there, and what requests wait for, so whoever waits sees whom for."""
    try:
        holdings = engine.devices.device_holdings()
    except USER_ERRORS as exc:  # an unwritable data dir (no job list): the tab still builds and says why
        return [["", str(exc), "", "", ""]]
    session = engine.devices.stats()
    rows = []
    for d in holdings:
        if d["total_mb"] is not None:
            memory = f"{d['free_mb']:,} of {d['total_mb']:,} MB free"
        elif ":" in d["device"]:  # a CPU job slot
            memory = "RAM shared with the other slots"
        else:  # the device the session manager serves from, outside the job slots
            memory = f"{session['used_mb']:,} of a {session['budget_mb']:,} MB budget held"
        jobs = "; ".join(f"{j['id']} ({j['owner']}, {j['kind']}, {_time_left(j['eta_s'])})" for j in d["jobs"])
        served = [f"{e['label']} {e['mb']:,} MB" + (" (in use)" if e["pinned"] else "") for e in d["serving"]]
        reserved = "; ".join(f"{r['job']} {r['mb']:,} MB" for r in d["reservations"])
        rows.append([d["device"], memory, jobs, "; ".join(served + [f"⏳ {w}" for w in d["waiting"]]), reserved])
    return rows


def entry_choices(engine: Engine) -> list[tuple[str, str]]:
    """(what the table calls it, the key unload takes) for each loaded entry: people read the first."""
    return [(f"{e['label']} ({e['kind']})", e["key"]) for e in engine.devices.stats()["entries"]]


def timings_markdown(t) -> str:
    return (f"**{t.new_tokens}** new tokens · time to first token **{t.ttft_s:.3f} s** · "
            f"decode **{t.decode_tokens_per_s:.1f} tok/s** · total **{t.total_s:.2f} s** · "
            f"prompt {t.prompt_tokens} tokens" + (f" · queued {t.queue_s:.2f} s" if t.queue_s >= 0.01 else ""))


def build(engine: Engine) -> None:
    def refresh():
        choices = entry_choices(engine)
        return (device_markdown(engine), held_rows(engine),
                gr.update(choices=choices, value=choices[0][1] if choices else None), device_rows(engine))

    def load(model_id: str, four_bit: bool, request: gr.Request):
        try:
            loaded = engine.models.load(model_id, four_bit, user=engine.uploads.user_of(request.username))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        status = (f"Loaded `{loaded.spec.model_id}` ({loaded.nbytes / 2**20:,.0f} MB, "
                  f"window {loaded.context_window:,} tokens) in {loaded.load_s:.1f} s.")
        return status, *refresh()

    def unload(key: str | None, request: gr.Request):
        if not key:
            raise gr.Error("Nothing selected to unload.")
        try:  # the engine decides: admins only with sign-in on, and never what a request is using
            unloaded = engine.models.unload(key, engine.uploads.user_of(request.username))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        return (f"Unloaded `{key}`." if unloaded else f"`{key}` was not loaded."), *refresh()

    def cancel(request_id: float | None, request: gr.Request):
        try:
            if request_id is None:
                raise ValueError("Type the id of a request from the list above.")
            done = engine.requests.cancel_request(int(request_id), engine.uploads.user_of(request.username))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        note = (f"Request {int(request_id)} cancelled: it stops at its next token." if done
                else f"Request {int(request_id)} had already ended.")
        return note, request_rows(engine)

    def unload_allowed(request: gr.Request):
        """On page load: the Unload button is disabled, with the reason beside it, for whoever may not unload."""
        refusal = engine.models.unload_refusal(engine.uploads.user_of(request.username))
        return gr.update(interactive=refusal is None), (f"🔒 {refusal}" if refusal else "")

    def playground(prompt: str, max_new_tokens: float, temperature: float, model_id: str, request: gr.Request):
        try:
            settings = GenerationSettings(max_new_tokens=int(max_new_tokens), temperature=float(temperature))
            caller = engine.requests.new_caller("playground", engine.uploads.user_of(request.username),
                                                request.session_hash)
            stream = engine.models.generate(prompt, settings, model_id=model_id or None, caller=caller,
                                            user=engine.uploads.user_of(request.username))
            for kind, event in with_queue_position(engine, caller, stream):
                if kind == "waiting":
                    yield "", waiting_note(engine, event)
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
        devices = gr.Dataframe(headers=DEVICE_HEADERS, value=device_rows(engine), label="Devices: who holds what",
                               interactive=False, elem_id="system-devices")
        with gr.Row():
            model_id = gr.Textbox(value=engine.settings.model_id, label="Model id",
                                  info="'embedded' (SmolLM2-135M, offline), a local folder, or a Hugging Face id "
                                       "where the Hub is reachable", scale=3)
            four_bit = gr.Checkbox(value=engine.settings.load_in_4bit, label="4-bit NF4 (bitsandbytes)", scale=1)
            load_btn = gr.Button("Load", variant="primary", scale=1)
        with gr.Row():
            unload_key = gr.Dropdown(choices=[], label="Loaded entry", allow_custom_value=True, scale=3)
            # Disabled until the page knows who is asking (sign-in on); then enabled for whoever may unload.
            unload_btn = gr.Button("Unload", scale=1, elem_id="system-unload",
                                   interactive=not engine.settings.sign_in_on())
        unload_note = gr.Markdown(elem_id="system-unload-note")
        requests = gr.Dataframe(headers=REQUEST_HEADERS, value=request_rows(engine), interactive=False,
                                label="Model requests in flight (answering or waiting for their turn)",
                                elem_id="system-requests")
        with gr.Row():
            request_id = gr.Number(value=None, precision=0, minimum=1, label="Request id", scale=3, placeholder="id",
                                   info="your own requests, or anyone's if you are an admin (LAB_ADMINS)")
            cancel_btn = gr.Button("Cancel request", scale=1, elem_id="system-cancel")
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

        outputs = [device_md, table, unload_key, devices]
        cancel_btn.click(cancel, [request_id], [status, requests], api_name="cancel_request", **POLL)
        load_btn.click(load, [model_id, four_bit], [status, *outputs], api_name="load_model", **GPU)
        unload_btn.click(unload, [unload_key], [status, *outputs], api_name="unload_model", **POLL)
        gr.on(None, unload_allowed, None, [unload_btn, unload_note], api_visibility="private", **POLL)
        run_btn.click(gpu(playground), [prompt, max_new, temperature, model_id], [answer, timings],
                      api_name="playground", **GPU).then(refresh, None, outputs, **POLL)
        prompt.submit(gpu(playground), [prompt, max_new, temperature, model_id], [answer, timings],
                      api_visibility="private", **GPU)
        def system_stats() -> dict:
            """What the session manager holds and who is using or waiting for the GPU."""
            return engine.devices.stats()

        gr.api(system_stats, api_name="system_stats", concurrency_limit=None)
        # Choices only (no value) so a selection the user is making survives the refresh.
        gr.Timer(3).tick(lambda: (device_markdown(engine), held_rows(engine),
                                  gr.update(choices=entry_choices(engine)), device_rows(engine), request_rows(engine)),
                         None, [*outputs, requests], **POLL)
