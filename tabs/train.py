"""Train tab: pick a kind and a preset, edit the config, launch a background job, watch it learn.

    python app.py   # then open the Train tab

Jobs run as `accelerate launch` subprocesses and write their status, metrics and log to
`<data>/jobs/<id>/`; this tab only reads those files (polled by a gr.Timer), so closing the
browser or restarting the app loses nothing.
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd
import yaml

from lab.core.spaces import gpu
from lab.engine import Engine
from lab.training.data.builder import BuilderConfig
from tabs.common import GPU, POLL, USER_ERRORS, user_error

JOB_HEADERS = ["job", "kind", "state", "step", "time left / start", "tokens/s", "message"]


def _config_from_yaml(engine: Engine, text: str):
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"The config is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("The config must be a YAML mapping of field: value lines.")
    return engine.jobs.config_from_dict(data, source="the config editor")


def _eta(status: dict) -> str:
    """Time left, only while the job is training: a stopped or killed job keeps its last estimate on disk."""
    seconds = status.get("eta_s")
    if status.get("state") not in ("running", "stopping") or not seconds:
        return ""
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def state_line(status: dict) -> str:
    """'completed; output in …' rather than 'completed: completed; output in …': the message often starts with
    the state already, and then says it better alone."""
    state, message = str(status.get("state") or "?"), (status.get("message") or "").strip()
    if not message or message == state:
        return state
    return message if message.startswith(state) else f"{state}: {message}"


def newest_first(jobs: list[dict]) -> list[dict]:
    """Jobs with the latest created first (ids start with their creation time, so they break ties)."""
    return sorted(jobs, key=lambda j: (j.get("created") or "", j.get("id") or ""), reverse=True)


def _starts(job: dict, starts: dict[str, float | None]) -> str:
    """When a queued job should start (engine.devices.queue_estimates), else its time left while it trains."""
    if job.get("state") != "queued" or job.get("id") not in starts:
        return _eta(job)
    seconds = starts[job["id"]]
    if seconds is None:
        return "start unknown"
    return "starts now" if seconds < 1 else f"starts in ~{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def job_rows(jobs: list[dict], starts: dict[str, float | None] | None = None) -> list[list]:
    """The job table: queued jobs show their place and estimated start, running ones their time left."""
    rows = []
    for j in jobs:
        step = f"{j.get('step') or 0}/{j.get('max_steps') or '?'}"
        state = j.get("state", "?") + (f" (#{j['queue_position']})" if j.get("queue_position") else "")
        tps = j.get("tokens_per_s")
        rows.append([j.get("id"), j.get("kind"), state, step, _starts(j, starts or {}),
                     f"{tps:.0f}" if tps else "", (j.get("message") or "")[:120]])
    return rows


def progress_html(status: dict) -> str:
    step, total = status.get("step") or 0, status.get("max_steps") or 0
    share = min(1.0, step / total) if total else 0.0
    tps = status.get("tokens_per_s")
    label = (f"{status.get('state', '?')} · step {step}/{total or '?'} · ETA {_eta(status) or '—'}"
             + (f" · {tps:.0f} tokens/s" if tps else ""))
    return (f"<div class='lab-progress'><div style='background:#e5e7eb;border-radius:6px;height:14px'>"
            f"<div style='width:{100 * share:.1f}%;background:#6366f1;height:14px;border-radius:6px'></div></div>"
            f"<div style='margin-top:4px'>{html.escape(label)}</div>"
            f"<div style='margin-top:4px'>{html.escape(status.get('message') or '')}</div></div>")


LOSS_SERIES = ("loss", "eval_loss", "reward", "kl")


def curve_frame(rows: list[dict], series: tuple[str, ...] = ()) -> pd.DataFrame:
    """step and value as floats even with no rows, and one empty point (no step, no value: never drawn) per name in
    `series` first. The browser's plot builds its chart once, from the first frame it gets, and then only swaps
    the points: text-typed columns would draw every later loss as a category, and a colour list without a
    curve's name would leave that curve invisible."""
    placeholders = [{"step": None, "value": None, "series": name} for name in series]
    frame = pd.DataFrame(placeholders + rows, columns=["step", "value", "series"])
    return frame.astype({"step": "float64", "value": "float64", "series": "string"})


def curves(metrics: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    def rows(keys):
        return [{"step": m["step"], "value": m[k], "series": k} for m in metrics for k in keys
                if m.get(k) is not None and m.get("step") is not None]
    return curve_frame(rows(LOSS_SERIES), LOSS_SERIES), curve_frame(rows(["learning_rate"])), \
        curve_frame(rows(["grad_norm"]))


def build(engine: Engine) -> None:
    def load_preset(name: str | None):
        if not name:
            return gr.update()
        try:
            return engine.jobs.preset_yaml(name)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    def kind_changed(kind: str):
        names = engine.jobs.presets(kind)
        docs = engine.jobs.field_docs(engine.jobs.CONFIG_KINDS[kind])
        table = "\n".join(f"| `{k}` | {v} |" for k, v in docs.items())
        return (gr.update(choices=names, value=names[0] if names else None),
                f"| field | what it does |\n|---|---|\n{table}")

    def show_command(text: str) -> str:
        try:
            return engine.jobs.command_preview(_config_from_yaml(engine, text))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    def preview(text: str) -> str:
        """Parameters and memory of a pretraining config before launch; other kinds point to Explain."""
        try:
            cfg = _config_from_yaml(engine, text)
            if cfg.kind != "pretrain":
                return ("Parameter counts and memory estimates for fine-tuning are in the Explain tab "
                        "(trainable parameters, memory estimate).")
            p = engine.explain.pretrain_preview(cfg)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        parts = ", ".join(f"{k} {v:,}" for k, v in p["params_by_part"].items())
        missing = "; ".join(f"{k}: {v}" for k, v in p["unavailable_positional_encodings"].items())
        return (f"**{p['params']:,} parameters** as `{p['backend']}` ({p['attention']}, head size {p['head_dim']}, "
                f"vocabulary {p['vocab_size']:,}, {p['positional_encoding']}) · {parts}\n\n"
                f"Estimated training memory **{p['memory_total']}** · {p['tokens_per_step']:,} tokens per step\n\n"
                f"Not available in the mapped transformers classes: {missing}")

    def launch(text: str, request: gr.Request):
        try:
            job_id = engine.jobs.submit(_config_from_yaml(engine, text), engine.uploads.user_of(request.username))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        return refresh(job_id)

    def teach(request: gr.Request):
        return launch(engine.jobs.preset_yaml(engine.jobs.TEACH_PRESET), request)

    def refresh(selected: str | None):
        """The job list, newest first; the watched job stays unless it is gone (then the newest is watched)."""
        jobs = newest_first(engine.jobs.on_disk())
        ids = [j["id"] for j in jobs]
        selected = selected if selected in ids else (ids[0] if ids else None)
        line, *watched = watch(selected)
        rows = job_rows(jobs, engine.devices.queue_estimates(jobs))
        return line, rows, gr.update(choices=ids, value=selected), *watched

    def watch(job_id: str | None):
        """The watched job's state line, progress, curves and log; redrawn on every poll, so the line above the
        list follows the job to its end."""
        if not job_id:
            empty = curve_frame([])
            return "", "", curve_frame([], LOSS_SERIES), empty, empty, ""
        status = engine.jobs.status(job_id)
        loss, lr, grad = curves(engine.jobs.metrics(job_id))
        return (f"Job `{job_id}` is {state_line(status)}.", progress_html(status), loss, lr, grad,
                engine.jobs.log(job_id, lines=30))

    def control(action: str, job_id: str | None, request: gr.Request):
        if not job_id:
            raise gr.Error("Select a job first.")
        try:
            engine.jobs.control(action, job_id, engine.uploads.user_of(request.username))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        if action == "delete":  # the list loses it; the newest job is watched instead
            return f"Deleted job `{job_id}`.", *refresh(None)[1:]
        return refresh(job_id)

    def adapters_table():
        """Adapters trained on purpose first (newest first), then each sweep's points together under its id."""
        found = [a for a in engine.adapters.all() if a.job_id]
        sweeps = engine.adapters.sweeps(found)
        ordered = [a for a in found if a.name not in sweeps] + sorted(
            (a for a in found if a.name in sweeps), key=lambda a: (sweeps[a.name], a.name))
        return [[a.name, engine.adapters.summary(a), sweeps.get(a.name, ""), engine.adapters.owner(a), a.job_id,
                 a.created] for a in ordered]

    def change_adapter(action: str):
        def act(name: str, new_name: str, request: gr.Request):
            if not name or not name.strip():
                raise gr.Error(f"Type the name of an adapter from the table to {action}.")
            try:
                user = engine.uploads.user_of(request.username)
                if action == "rename":
                    done = f"Renamed `{name.strip()}` to `{engine.adapters.rename(name, new_name or '', user).name}`."
                else:
                    engine.adapters.delete(name, user)
                    done = f"Deleted adapter `{name.strip()}`."
            except USER_ERRORS as exc:
                raise user_error(exc) from exc
            return done, adapters_table()
        return act

    def merge(name: str, request: gr.Request):
        if not name or not name.strip():
            raise gr.Error("Type the name of an adapter from the table to merge.")
        try:
            out = engine.adapters.merge(name, user=engine.uploads.user_of(request.username))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        shown = out.relative_to(engine.settings.data_dir) if out.is_relative_to(engine.settings.data_dir) else out.name
        return f"Merged into `{shown}` in the lab's data folder (safetensors + tokenizer)."

    def build_qa(doc_file: str | None, pairs: float, max_chunks: float, progress=gr.Progress()):
        try:
            doc = engine.knowledge.load_document(doc_file) if doc_file else engine.knowledge.bundled_document()
            cfg = BuilderConfig(pairs_per_chunk=int(pairs), max_chunks=int(max_chunks) if max_chunks else None)
            result = engine.datasets.build_qa_dataset(
                doc, cfg, progress=lambda done, total, msg: progress((done, total), desc=msg))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        rows = [[p.question, p.answer] for p in result.pairs]
        return rows, (f"{len(result.pairs)} pairs kept, {len(result.rejected)} rejected, from {len(result.chunks)} "
                      f"chunks in {result.seconds:.0f} s. Edit the table, then save it.")

    def save_qa(table, name: str, request: gr.Request):
        try:
            rows = table.values.tolist() if isinstance(table, pd.DataFrame) else list(table or [])
            path = engine.datasets.save_qa_pairs(engine.uploads.user_of(request.username), rows, name)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        saved = sum(1 for q, a in rows if str(q).strip() and str(a).strip())  # the rows save_qa_pairs keeps
        return f"Saved {saved} pairs to `{path}`; use it in a job config as `datasets: [{{path: {path}, format: qa}}]`."

    kinds = list(engine.jobs.CONFIG_KINDS)
    with gr.Tab("Train", id="train"):
        gr.Markdown("Launch fine-tuning jobs in the background and watch them learn. Jobs survive closing the "
                    "browser or restarting the app; as many run at once as fit (GPUs by memory, or LAB_CPU_JOB_SLOTS "
                    "on a CPU) and the rest wait in a queue that takes users in turn.")
        with gr.Row():
            teach_btn = gr.Button("Teach this document (SFT LoRA on the bundled Q&A set)", variant="primary",
                                  elem_id="train-teach")
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    kind = gr.Radio(kinds, value="sft", label="Kind")
                    preset = gr.Dropdown(engine.jobs.presets("sft"), value=engine.jobs.TEACH_PRESET, label="Preset")
                editor = gr.Code(engine.jobs.preset_yaml(engine.jobs.TEACH_PRESET), language="yaml",
                                 label="Job config (edit any field)", lines=18, elem_id="train-config")
                with gr.Row():
                    preview_btn = gr.Button("Preview size and memory")
                    command_btn = gr.Button("Show command")
                    launch_btn = gr.Button("Launch job", variant="primary", elem_id="train-launch")
                command = gr.Code(label="Command the job runs", language="shell", lines=2)
                previewed = gr.Markdown(elem_id="train-preview")
                with gr.Accordion("What each field does", open=False):
                    docs = gr.Markdown(kind_changed("sft")[1])
            with gr.Column(scale=3):
                launched = gr.Markdown(elem_id="train-launched")
                jobs_table = gr.Dataframe(headers=JOB_HEADERS, label="Jobs (newest first)", interactive=False,
                                          elem_id="train-jobs")
                job = gr.Dropdown([], label="Job", allow_custom_value=True, elem_id="train-job")
                with gr.Row():  # under the list, so a job id is never cut short by the buttons beside it
                    stop_btn = gr.Button("Stop (saves)", scale=1)
                    kill_btn = gr.Button("Kill", scale=1, variant="stop")
                    resume_btn = gr.Button("Resume", scale=1)
                    delete_btn = gr.Button("Delete", scale=1, elem_id="train-delete")
                progress = gr.HTML(elem_id="train-progress")
                # Loss gets the full width; the two smaller curves share a row below it. Titles are drawn inside
                # the chart: gradio sizes a chart to its box and a label above would push the step axis out of it.
                loss_plot = gr.LinePlot(x="step", y="value", color="series", height=280, title="Loss",
                                        show_label=False, elem_id="train-loss")
                with gr.Row():
                    lr_plot = gr.LinePlot(x="step", y="value", height=230, title="Learning rate", show_label=False,
                                          elem_id="train-lr")
                    grad_plot = gr.LinePlot(x="step", y="value", height=230, title="Grad norm", show_label=False,
                                            elem_id="train-grad")
                log = gr.Code(label="Log tail", lines=10, elem_id="train-log")
        with gr.Accordion("Build a Q&A dataset from a document (constrained decoding with the local model)",
                          open=False):
            with gr.Row():
                qa_doc = gr.File(label="Document (.md, .txt, .pdf; default: the bundled guide)", type="filepath",
                                 file_types=[".md", ".txt", ".pdf"], height=120, scale=2)
                qa_pairs = gr.Number(2, precision=0, label="pairs per chunk", scale=1)
                qa_chunks = gr.Number(3, precision=0, label="chunks (0 = all)", scale=1)
                qa_build = gr.Button("Build", variant="primary", scale=1)
            qa_table = gr.Dataframe(headers=["question", "answer"], interactive=True, label="Pairs (editable)",
                                    elem_id="train-qa-table")
            qa_info = gr.Markdown()
            with gr.Row():
                qa_name = gr.Textbox("my_qa", label="Save as (in your workspace)", scale=3)
                qa_save = gr.Button("Save JSONL", scale=1)
        with gr.Accordion("Adapters: list, rename, delete, merge and export", open=False):
            # A callable value is read again on every page load: the list is there when the page opens.
            adapters = gr.Dataframe(adapters_table, headers=["adapter", "what it is", "sweep", "owner", "job",
                                                             "created"], interactive=False, elem_id="train-adapters")
            gr.Markdown("A sweep's adapters are listed under their sweep and left out of Compare's and the Arena's "
                        "lists (Compare can show them). Only an adapter's owner, or an admin, may rename or delete it.")
            with gr.Row():
                merge_name = gr.Textbox(label="Adapter (a name from the table)", scale=2, elem_id="train-adapter-name")
                new_name = gr.Textbox(label="New name (for rename)", scale=2, elem_id="train-adapter-new-name")
                rename_btn = gr.Button("Rename", scale=1, elem_id="train-adapter-rename")
                delete_btn_adapter = gr.Button("Delete", variant="stop", scale=1, elem_id="train-adapter-delete")
                merge_btn = gr.Button("Merge and export", scale=1)
            merged = gr.Markdown(elem_id="train-adapter-result")

        watch_out = [launched, progress, loss_plot, lr_plot, grad_plot, log]
        refresh_out = [launched, jobs_table, job, *watch_out[1:]]
        kind.change(kind_changed, kind, [preset, docs], queue=False)
        preset.change(load_preset, preset, editor, queue=False)
        command_btn.click(show_command, editor, command, queue=False)
        preview_btn.click(preview, editor, previewed, api_name="train_preview")
        launch_btn.click(launch, editor, refresh_out, api_name="train_launch")
        teach_btn.click(teach, None, refresh_out, api_name="train_teach")
        job.select(watch, job, watch_out, **POLL)
        def controller(action: str):
            def act(job_id: str | None, request: gr.Request):
                return control(action, job_id, request)
            return act

        for btn, action in ((stop_btn, "stop"), (kill_btn, "kill"), (resume_btn, "resume"), (delete_btn, "delete")):
            btn.click(controller(action), job, refresh_out, api_name=f"train_{action}")
        qa_build.click(gpu(build_qa), [qa_doc, qa_pairs, qa_chunks], [qa_table, qa_info], api_name="dataset_build",
                       **GPU)
        qa_save.click(save_qa, [qa_table, qa_name], qa_info, api_name="dataset_save")
        merge_btn.click(merge, merge_name, merged, api_name="train_merge").then(adapters_table, None, adapters)
        rename_btn.click(change_adapter("rename"), [merge_name, new_name], [merged, adapters],
                         api_name="adapter_rename")
        delete_btn_adapter.click(change_adapter("delete"), [merge_name, new_name], [merged, adapters],
                                 api_name="adapter_delete")
        gr.Timer(2).tick(refresh, job, refresh_out, **POLL)
        gr.Timer(10).tick(adapters_table, None, adapters, **POLL)

        def list_jobs() -> list[dict]:
            """Every job with its status, as the job folders on disk say."""
            return engine.jobs.all()

        def job_detail(job_id: str) -> dict:
            """One job's status, metrics and log tail."""
            try:
                return {"status": engine.jobs.status(job_id), "metrics": engine.jobs.metrics(job_id),
                        "log": engine.jobs.log(job_id, lines=40)}
            except USER_ERRORS as exc:
                raise user_error(exc) from exc

        gr.api(list_jobs, api_name="train_jobs")
        gr.api(job_detail, api_name="train_job")
