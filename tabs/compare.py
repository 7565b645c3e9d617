"""Compare tab: one question answered side by side by RAG, CAG, full context, the base model and
fine-tuned adapters, each with what it cost; and batch evaluation over a QA set.

    python app.py   # then open the Compare tab
"""

from __future__ import annotations

import queue
import threading
from datetime import datetime

import gradio as gr
import pandas as pd

from lab.core.spaces import gpu
from lab.engine import Engine
from lab.knowledge.compare import CompareConfig
from lab.knowledge.documents import Document
from lab.knowledge.rag import RagConfig
from tabs.cards import render_cards
from tabs.common import GPU, POLL, USER_ERRORS, user_error, waiting_note, with_queue_position

BUNDLED_IN_USE = "Until then the bundled guide is in use."
SCORE_NAMES = {"exact_match": "EM", "f1": "F1", "rouge_l": "ROUGE-L", "bleu": "BLEU", "recall_at_k": "recall@k"}


def chart_scores(methods: dict[str, dict], scores) -> list[str]:
    """The scores to draw: the answer scores, and recall@k when a method retrieved (was the reference in a retrieved
    chunk): beside F1 it tells a retrieval failure from a reading failure."""
    retrieved = any(row.get("recall_at_k") is not None for row in methods.values())
    return [*scores, "recall_at_k"] if retrieved else list(scores)


def score_chart(methods: dict[str, dict], scores) -> pd.DataFrame:
    """One bar per (metric, method), grouped by metric: gradio's bar plot stacks the rows that share an x value,
    and scores of different methods must stand side by side on the 0-1 axis, never on top of each other."""
    rows = [{"bar": f"{SCORE_NAMES.get(score, score)} · {name}", "method": name,
             "value": float(row.get(score) or 0.0)} for score in scores for name, row in methods.items()]
    return pd.DataFrame(rows, columns=["bar", "method", "value"]).astype({"value": "float64"})


class PageEvaluations:
    """The evaluations each open page runs, keyed by gradio's session hash, so that a page's Cancel button, or the
    page closing, stops its own runs and nobody else's. One per app (the tab's build holds it), never per module."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._runs: dict[str, list[tuple[threading.Event, str]]] = {}
        self._lock = threading.Lock()

    def start(self, page: str, caller: str) -> threading.Event:
        cancel = threading.Event()
        with self._lock:
            self._runs.setdefault(page, []).append((cancel, caller))
        return cancel

    def end(self, page: str, cancel: threading.Event) -> None:
        """Forget one run, cancelling it if it is still going (its page went away)."""
        with self._lock:
            runs = self._runs.get(page, [])
            caller = next((c for event, c in runs if event is cancel), None)
            self._runs[page] = [run for run in runs if run[0] is not cancel]
            if not self._runs[page]:
                del self._runs[page]
        self._stop(cancel, caller)

    def cancel(self, page: str) -> int:
        """Cancel every run of one page; how many there were."""
        with self._lock:
            runs = list(self._runs.get(page, []))
        for cancel, caller in runs:
            self._stop(cancel, caller)
        return len(runs)

    def _stop(self, cancel: threading.Event, caller: str | None) -> None:
        if cancel.is_set() or caller is None:
            return
        cancel.set()
        # A request still waiting for the model leaves its queue now instead of being answered, then dropped.
        self._engine.requests.cancel_caller(caller)


def eval_status(result: dict, stem: str) -> str:
    """What a finished or cancelled evaluation did, and where it was saved."""
    saved = f"saved in your workspace as `{stem}.json` and `.csv`"
    if result["cancelled"]:
        return (f"**Cancelled after {result['answered']} of {result['answers']} answers** (questions × methods); "
                f"the {result['answered']} scored so far are summarised below and {saved}.")
    recall = [f"{name}: the reference was in a retrieved chunk for {row['recall_at_k']:.0%} of the questions"
              for name, row in result["methods"].items() if row.get("recall_at_k") is not None]
    return (f"Scored {result['answered']} answers ({result['questions']} questions × {len(result['methods'])} "
            f"methods) in {result['elapsed_s']} s; {saved}."
            + (f" Retrieval: {'; '.join(recall)} (recall@k; a low F1 with a high recall@k means the model misread "
               "the right chunk)." if recall else ""))


def build(engine: Engine, demo: gr.Blocks | None = None) -> None:
    """The tab's components and events; with `demo`, each page load fills the lists of the signed-in user's own
    uploads and evaluations (they differ per user, so they cannot be part of the page the server builds once), and
    closing or reloading a page cancels its evaluations."""
    page_runs = PageEvaluations(engine)

    def use_document(source: str, upload: str | None, saved: str | None, request: gr.Request):
        """Pick the knowledge document: the bundled guide, a new upload (kept in your workspace), or one of your
        earlier uploads by name (the latest when none is picked). A choice that names no file yet keeps the
        bundled guide and says so, rather than raising an error with nothing to act on."""
        user = engine.uploads.user_of(request.username)
        try:
            mine = engine.uploads.names(user)
            if source == "upload" and upload is None:
                return None, f"Drop a .md, .txt or .pdf file in the box. {BUNDLED_IN_USE}", gr.update(choices=mine)
            if source == "upload":
                doc = engine.uploads.save(user, upload)  # checks type, size and content before anything is kept
                mine = engine.uploads.names(user)
                saved = doc.name if doc.name in mine else saved
            elif source == "my uploads":
                if not saved and not mine:
                    return (None, f"You have no uploads yet: choose \"upload\" and drop a file. {BUNDLED_IN_USE}",
                            gr.update(choices=mine, value=None))
                saved = saved or engine.uploads.latest(user)
                doc = engine.uploads.open(user, saved)
            else:
                doc = engine.knowledge.bundled_document()
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        return (doc, f"Using **{doc.name}** ({source}) · {doc.n_chars:,} characters · hash `{doc.sha256[:12]}`",
                gr.update(choices=mine, value=saved if saved in mine else None))

    def uploaded(upload: str | None, saved: str | None, request: gr.Request):
        """A file dropped in the box is what the user means to use, whatever the radio said before."""
        if upload is None:  # the box was cleared: keep what is in use
            return gr.update(), gr.update(), gr.update(), gr.update()
        return "upload", *use_document("upload", upload, saved, request)

    def picked(saved: str | None, request: gr.Request):
        """Picking one of your uploads from the list switches to it."""
        return "my uploads", *use_document("my uploads", None, saved, request)

    def config(chunk_size, overlap, top_k, max_new, short, four_bit, chunking) -> CompareConfig:
        return CompareConfig(max_new_tokens=int(max_new), stop_at_answer=bool(short), load_in_4bit=bool(four_bit),
                             rag=RagConfig(chunk_size=int(chunk_size), chunk_overlap=int(overlap), top_k=int(top_k),
                                           chunking=chunking or "markdown"))

    def ask(request: gr.Request, doc: Document | None, question: str, methods: list[str], *settings):
        try:
            user = engine.uploads.user_of(request.username)
            doc = doc or engine.knowledge.bundled_document()
            cfg = config(*settings)
            caller = engine.requests.new_caller("compare", user, request.session_hash)
            updates: dict[str, object] = dict.fromkeys(methods or [])
            stream = engine.workflows.ask(doc, question, methods or [], cfg, caller, user=user)  # kept in History
            for kind, value in with_queue_position(engine, caller, stream):
                if kind == "waiting":
                    yield render_cards(updates, waiting_note(engine, value))
                elif isinstance(value, list):  # the last item: the break-even sentences
                    yield render_cards(updates, break_even=value)
                else:
                    updates[value.method] = value
                    yield render_cards(updates)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    def run_eval(doc: Document | None, qa_file, limit, methods: list[str], chunk_size, overlap, top_k, max_new, short,
                 four_bit, chunking, request: gr.Request):
        """Score a QA set; the JSON and CSV stay in the user's workspace under evaluations/. The run goes on in a
        thread while this generator reports its progress; Cancel, or the page going away, stops it within the
        answer in progress, and what was scored by then is saved like a finished run."""
        try:
            user = engine.uploads.user_of(request.username)
            doc = doc or engine.knowledge.bundled_document()
            items = engine.knowledge.evaluation_items(doc, qa_file, limit=int(limit) if limit else None)
            cfg = config(chunk_size, overlap, top_k, max_new, short, four_bit, chunking)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        caller = engine.requests.new_caller("eval", user, request.session_hash)
        cancel = page_runs.start(request.session_hash, caller)
        box: queue.Queue = queue.Queue()
        stem = datetime.now().strftime("eval-%Y%m%d-%H%M%S-%f")

        def work():
            try:
                # Saved and kept in History by the workflow, not by the page: a page closed mid-run still keeps
                # what was scored, in its list.
                result, _ = engine.workflows.evaluate(
                    doc, items, methods or [], cfg, user=user, cancel=cancel, caller=caller, name=stem,
                    progress=lambda done, total, msg: box.put(("progress", (done, total, msg))))
                box.put(("done", result))
            except BaseException as exc:  # handed to the page's thread, which shows it
                box.put(("error", exc))

        threading.Thread(target=work, daemon=True, name=f"eval-{caller}").start()
        try:
            while True:
                try:
                    kind, value = box.get(timeout=0.5)
                except queue.Empty:
                    if position := engine.requests.queue_position(caller):  # waiting for the model behind other work
                        yield gr.update(), gr.update(), gr.update(), waiting_note(engine, position)
                    continue
                if kind == "progress":
                    done, total, message = value
                    yield (gr.update(), gr.update(), gr.update(),
                           f"⏳ {done} of {total} answers ({message}). Cancel stops within the answer in progress "
                           "and keeps the rows scored so far.")
                elif kind == "error":
                    raise user_error(value) if isinstance(value, USER_ERRORS) else value
                else:
                    result = value
                    break
        finally:
            # Also reached when gradio closes this generator because the page went away (it does so at the next
            # update after the client disconnects): the run then stops within the answer in progress.
            page_runs.end(request.session_hash, cancel)
        table = pd.DataFrame([{"method": name, **{k: v for k, v in row.items() if k not in ("error",)}}
                              for name, row in result["methods"].items()])
        chart = score_chart(result["methods"], chart_scores(result["methods"], engine.knowledge.SCORES))
        kept = [str(p) for p in engine.knowledge.evaluations(user)]
        # Bars in the order built (grouped by metric), not sorted alphabetically across metrics.
        yield table, gr.update(value=chart, sort=list(chart["bar"])), kept, eval_status(result, stem)

    def cancel_eval(request: gr.Request):
        if page_runs.cancel(request.session_hash):
            return "Cancelling: the answer in progress is dropped; the rows scored so far are kept and saved."
        return "No evaluation is running on this page."

    def page_closed(request: gr.Request):
        page_runs.cancel(request.session_hash)

    def page_loaded(request: gr.Request):
        user = engine.uploads.user_of(request.username)
        try:
            kept = [str(p) for p in engine.knowledge.evaluations(user)]
            return gr.update(choices=engine.uploads.names(user)), kept or None
        except USER_ERRORS:  # an unwritable data directory: the first action that needs it says so
            return gr.update(), None

    with gr.Tab("Compare", id="compare"):
        gr.Markdown("Ask one question and see how each way of giving the model knowledge answers, and what it "
                    "costs. CAG keeps the whole document in the model's KV cache, built once and reused.")
        doc_state = gr.State(None)
        with gr.Row():
            source = gr.Radio(["bundled guide", "upload", "my uploads"], value="bundled guide",
                              label="Knowledge document", scale=1, elem_id="compare-source")
            upload = gr.File(label=f"Your document (.md, .txt, .pdf, up to {engine.settings.max_upload_mb:g} MB)",
                             file_types=[".md", ".txt", ".pdf"],
                             type="filepath", scale=2, height=120, elem_id="compare-upload")
            saved = gr.Dropdown([], label="Your earlier uploads", allow_custom_value=True, scale=1,
                                elem_id="compare-saved")
        doc_info = gr.Markdown("Using the bundled guide on RAG, CAG and fine-tuning.", elem_id="compare-doc")
        with gr.Row():
            methods = gr.CheckboxGroup(engine.knowledge.compare_method_labels(), value=list(engine.knowledge.METHODS),
                                       label="Methods", elem_id="compare-methods", scale=5,
                                       info="ft:NAME columns are LoRA adapters trained in the Train tab")
            with_sweeps = gr.Checkbox(False, label="show sweep adapters", scale=1, elem_id="compare-with-sweeps",
                                      info="the adapters each point of an Explain sweep trained")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                chunk_size = gr.Number(500, precision=0, label="RAG chunk size (characters)")
                overlap = gr.Number(50, precision=0, label="RAG chunk overlap")
                top_k = gr.Number(3, precision=0, label="RAG top-k")
                max_new = gr.Number(48, precision=0, label="max_new_tokens")
                short = gr.Checkbox(True, label="stop after the short answer")
                four_bit = gr.Checkbox(engine.settings.load_in_4bit, label="4-bit NF4 model")
            chunking = gr.Radio(["markdown", "recursive"], value="markdown", label="RAG chunking",
                                elem_id="compare-chunking",
                                info="markdown: cut at headings first, each chunk keeps its heading path; recursive: "
                                     "cut by size only. Which wins depends on the document: docs/KNOWLEDGE.md has "
                                     "both on the bundled guide and on a held-out handbook.")
        settings = [chunk_size, overlap, top_k, max_new, short, four_bit, chunking]
        with gr.Row():
            question = gr.Textbox(label="Question", placeholder="What does CAG store in the KV cache?", scale=4,
                                  elem_id="compare-question")
            ask_btn = gr.Button("Ask every method", variant="primary", scale=1, elem_id="compare-ask")
        cards = gr.HTML(render_cards(dict.fromkeys(engine.knowledge.METHODS), "ask a question"),
                        elem_id="compare-output")

        gr.Markdown("### Batch evaluation\nRun a QA set through the selected methods and score the answers "
                    "(exact match, token F1, ROUGE-L, BLEU) with latency percentiles. Your own document needs a QA "
                    "file about it; Cancel stops a run and keeps the answers scored so far.")
        with gr.Row():
            qa_file = gr.File(label="QA set (.jsonl, one {\"question\": ..., \"answer\": ...} per line; needed for "
                                    "your own document, the bundled guide has its own)",
                              file_types=[".jsonl"], height=120, scale=2, elem_id="compare-qa")
            limit = gr.Number(10, precision=0, label="questions (0 = all)", scale=1)
            with gr.Column(scale=1):
                eval_btn = gr.Button("Run evaluation", variant="primary", elem_id="compare-eval")
                cancel_btn = gr.Button("Cancel evaluation", variant="stop", elem_id="compare-eval-cancel")
        eval_status_md = gr.Markdown(elem_id="compare-eval-status")
        eval_table = gr.Dataframe(label="Scores per method", interactive=False, elem_id="compare-eval-table")
        # No colour legend: gradio draws it below a fixed-height chart, where it is cut off; each bar's label
        # names its method instead, and a method keeps its colour in every metric's group.
        eval_chart = gr.BarPlot(x="bar", y="value", color="method", colors_in_legend=[], y_lim=[0, 1],
                                x_title="metric · method", y_title="score (0-1)", x_label_angle=-40, height=380,
                                title="Scores (0-1), one bar per metric and method", show_label=False,
                                elem_id="compare-eval-chart")
        eval_files = gr.File(label="Your evaluations (JSON and CSV, kept in your workspace)", file_count="multiple",
                             interactive=False, elem_id="compare-eval-files")

        # Only a person's own choices trigger these (.input, .upload, .select), so setting the radio or the list
        # from a handler does not run the choice twice.
        source.input(use_document, [source, upload, saved], [doc_state, doc_info, saved],
                     api_name="compare_document", queue=False)
        upload.upload(uploaded, [upload, saved], [source, doc_state, doc_info, saved], queue=False,
                      api_visibility="private")
        saved.select(picked, saved, [source, doc_state, doc_info, saved], queue=False, api_visibility="private")
        ask_btn.click(gpu(ask), [doc_state, question, methods, *settings], cards, api_name="compare", **GPU)
        question.submit(gpu(ask), [doc_state, question, methods, *settings], cards, api_visibility="private", **GPU)
        eval_btn.click(gpu(run_eval), [doc_state, qa_file, limit, methods, *settings],
                       [eval_table, eval_chart, eval_files, eval_status_md], api_name="compare_eval",
                       show_progress_on=eval_status_md, **GPU)
        cancel_btn.click(cancel_eval, None, eval_status_md, api_name="compare_eval_cancel", **POLL)
        if demo is not None:
            demo.load(page_loaded, None, [saved, eval_files], queue=False, show_progress="hidden")
            # Gradio calls this when the page's heartbeat connection drops (closed or reloaded).
            demo.unload(page_closed)
        # New adapters from the Train tab appear as methods without a page reload.
        def method_choices(current: list[str], sweeps: bool):
            """Every method the lab has now; what is ticked stays ticked while it still exists."""
            labels = engine.knowledge.compare_method_labels(include_sweeps=bool(sweeps))
            offered = {method for _, method in labels}
            return gr.update(choices=labels, value=[m for m in current or [] if m in offered])

        with_sweeps.input(method_choices, [methods, with_sweeps], methods, queue=False, show_progress="hidden")
        gr.Timer(10).tick(method_choices, [methods, with_sweeps], methods, concurrency_limit=None,
                          show_progress="hidden")
