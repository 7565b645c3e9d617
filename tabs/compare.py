"""Compare tab: one question answered side by side by RAG, CAG, full context, the base model and
fine-tuned adapters, each with what it cost; and batch evaluation over a QA set.

    python app.py   # then open the Compare tab
"""

from __future__ import annotations

import html
from datetime import datetime

import gradio as gr
import pandas as pd

from lab.core.spaces import gpu
from lab.engine import Engine
from lab.knowledge.compare import CompareConfig
from lab.knowledge.documents import Document
from lab.knowledge.rag import RagConfig
from tabs.common import GPU, USER_ERRORS, user_error, with_queue_position

METHOD_TITLES = {"base": "Base (no knowledge)", "rag": "RAG (retrieved chunks)", "cag": "CAG (cached document)",
                 "full": "Full context (no cache)"}
CARD_CSS = ("display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:12px")


def _fmt(value, unit: str, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}".strip()


def render_cards(updates: dict[str, object], waiting: str = "") -> str:
    """One card per method: the short answer, the raw output, and every cost."""
    cards = []
    for method, u in updates.items():
        title = METHOD_TITLES.get(method, f"Fine-tuned ({method[3:]})" if method.startswith("ft:") else method)
        if u is None:
            body = f"<i>{html.escape(waiting or 'waiting for its turn…')}</i>"
        elif u.error:
            body = f"<div style='color:#b91c1c'>⚠️ {html.escape(u.error)}</div>"
        else:
            m = u.metrics
            rows = [("retrieval", _fmt(m.get("retrieval_ms"), "ms", 1)), ("time to first token", _fmt(m.get("ttft_s"), "s")),
                    ("decode", _fmt(m.get("decode_tokens_per_s"), "tok/s", 1)), ("total", _fmt(m.get("total_s"), "s")),
                    ("tokens in context", str(m.get("context_tokens", "—"))), ("cache size", _fmt(m.get("cache_mb"), "MB", 1))]
            table = "".join(f"<tr><td>{k}</td><td style='text-align:right'><b>{v}</b></td></tr>" for k, v in rows)
            chunks = "".join(f"<li><b>{c.score:.2f}</b> {html.escape(c.text[:160])}…</li>" for c in u.chunks)
            body = (f"<div class='lab-answer' style='font-size:1.1em;margin:4px 0'><b>{html.escape(u.answer or '…')}</b></div>"
                    f"<div style='color:#6b7280;font-size:0.85em;white-space:pre-wrap'>{html.escape(u.text)}</div>"
                    f"<table style='width:100%;font-size:0.85em;margin-top:6px'>{table}</table>"
                    + (f"<details><summary>retrieved chunks</summary><ol>{chunks}</ol></details>" if chunks else "")
                    + ("" if u.done else "<div><i>streaming…</i></div>"))
        cards.append(f"<div class='lab-card' data-method='{html.escape(method)}' style='border:1px solid #e5e7eb;"
                     f"border-radius:8px;padding:10px'><div style='font-weight:600;margin-bottom:4px'>"
                     f"{html.escape(title)}</div>{body}</div>")
    return f"<div id='compare-cards' style='{CARD_CSS}'>{''.join(cards)}</div>"


def build(engine: Engine) -> None:
    def use_document(source: str, upload: str | None, saved: str | None, request: gr.Request):
        """Pick the knowledge document: the bundled guide, a new upload (kept in your workspace),
        or one of your earlier uploads by name."""
        try:
            user = engine.user_of(request.username)
            if source == "upload":
                if upload is None:
                    raise ValueError("Choose a .md, .txt or .pdf file to upload first.")
                doc = engine.save_upload(user, upload)  # checks type, size and content before anything is kept
            elif source == "my uploads":
                if not saved:
                    raise ValueError("Pick one of your uploads first.")
                doc = engine.open_upload(user, saved)
            else:
                doc = engine.bundled_document()
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        return (doc, f"Using **{doc.name}** · {doc.n_chars:,} characters · hash `{doc.sha256[:12]}`",
                gr.update(choices=engine.uploads(user)))

    def config(chunk_size, overlap, top_k, max_new, short, four_bit) -> CompareConfig:
        return CompareConfig(max_new_tokens=int(max_new), stop_at_answer=bool(short), load_in_4bit=bool(four_bit),
                             rag=RagConfig(chunk_size=int(chunk_size), chunk_overlap=int(overlap), top_k=int(top_k)))

    def ask(doc: Document | None, question: str, methods: list[str], *settings):
        try:
            doc = doc or engine.bundled_document()
            cfg = config(*settings)
            caller = engine.sessions.new_caller("compare")
            updates: dict[str, object] = dict.fromkeys(methods or [])
            stream = engine.stream_compare(doc, question, methods or [], cfg, caller)
            for kind, value in with_queue_position(engine, caller, stream):
                if kind == "waiting":
                    yield render_cards(updates, f"waiting for the GPU: position {value} in the queue")
                else:
                    updates[value.method] = value
                    yield render_cards(updates)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    def run_eval(doc: Document | None, qa_file, limit, methods: list[str], chunk_size, overlap, top_k, max_new, short,
                 four_bit, request: gr.Request, progress=gr.Progress()):
        """Score a QA set; the JSON and CSV stay in the user's workspace under evaluations/."""
        try:
            doc = doc or engine.bundled_document()
            items = engine.load_qa(qa_file or engine.BUNDLED_QA, limit=int(limit) if limit else None)
            cfg = config(chunk_size, overlap, top_k, max_new, short, four_bit)
            result = engine.evaluate(doc, items, methods or [], cfg,
                                     progress=lambda done, total, msg: progress((done, total), desc=msg))
            stem = datetime.now().strftime("eval-%Y%m%d-%H%M%S-%f")
            files = [str(p) for p in engine.export_evaluation(result, engine.user_of(request.username), stem)]
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        table = pd.DataFrame([{"method": name, **{k: v for k, v in row.items() if k not in ("error",)}}
                              for name, row in result["methods"].items()])
        chart = pd.DataFrame([{"method": name, "metric": score, "value": row.get(score) or 0.0}
                              for name, row in result["methods"].items() for score in engine.SCORES])
        return table, chart, files

    with gr.Tab("Compare", id="compare"):
        gr.Markdown("Ask one question and see how each way of giving the model knowledge answers, and what it "
                    "costs. CAG keeps the whole document in the model's KV cache, built once and reused.")
        doc_state = gr.State(None)
        with gr.Row():
            source = gr.Radio(["bundled guide", "upload", "my uploads"], value="bundled guide",
                              label="Knowledge document", scale=1)
            upload = gr.File(label="Your document (.md, .txt, .pdf, up to 2 MB)", file_types=[".md", ".txt", ".pdf"],
                             type="filepath", scale=2, height=90)
            saved = gr.Dropdown([], label="Your earlier uploads", allow_custom_value=True, scale=1)
        doc_info = gr.Markdown("Using the bundled guide on RAG, CAG and fine-tuning.", elem_id="compare-doc")
        methods = gr.CheckboxGroup(engine.compare_methods(), value=list(engine.METHODS), label="Methods",
                                   elem_id="compare-methods",
                                   info="ft:NAME columns are LoRA adapters trained in the Train tab")
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                chunk_size = gr.Number(500, precision=0, label="RAG chunk size (characters)")
                overlap = gr.Number(50, precision=0, label="RAG chunk overlap")
                top_k = gr.Number(3, precision=0, label="RAG top-k")
                max_new = gr.Number(48, precision=0, label="max_new_tokens")
                short = gr.Checkbox(True, label="stop after the short answer")
                four_bit = gr.Checkbox(engine.settings.load_in_4bit, label="4-bit NF4 model")
        settings = [chunk_size, overlap, top_k, max_new, short, four_bit]
        with gr.Row():
            question = gr.Textbox(label="Question", placeholder="What does CAG store in the KV cache?", scale=4,
                                  elem_id="compare-question")
            ask_btn = gr.Button("Ask every method", variant="primary", scale=1, elem_id="compare-ask")
        cards = gr.HTML(render_cards(dict.fromkeys(engine.METHODS), "ask a question"), elem_id="compare-output")

        gr.Markdown("### Batch evaluation\nRun a QA set through the selected methods and score the answers "
                    "(exact match, token F1, ROUGE-L, BLEU) with latency percentiles.")
        with gr.Row():
            qa_file = gr.File(label="QA set (.jsonl of question/answer; default: the bundled set)",
                              file_types=[".jsonl"], height=90, scale=2)
            limit = gr.Number(10, precision=0, label="questions (0 = all)", scale=1)
            eval_btn = gr.Button("Run evaluation", variant="primary", scale=1, elem_id="compare-eval")
        eval_table = gr.Dataframe(label="Scores per method", interactive=False, elem_id="compare-eval-table")
        eval_chart = gr.BarPlot(x="method", y="value", color="metric", label="Scores (0-1)", height=260)
        eval_files = gr.File(label="Export (JSON and CSV)", file_count="multiple", interactive=False)

        gr.on([source.change, upload.change, saved.change], use_document, [source, upload, saved],
              [doc_state, doc_info, saved], api_name="compare_document", queue=False)
        ask_btn.click(gpu(ask), [doc_state, question, methods, *settings], cards, api_name="compare", **GPU)
        question.submit(gpu(ask), [doc_state, question, methods, *settings], cards, api_visibility="private", **GPU)
        eval_btn.click(gpu(run_eval), [doc_state, qa_file, limit, methods, *settings],
                       [eval_table, eval_chart, eval_files], api_name="compare_eval", **GPU)
        # New adapters from the Train tab appear as methods without a page reload.
        gr.Timer(10).tick(lambda current: gr.update(choices=engine.compare_methods(), value=current), methods,
                          methods, concurrency_limit=None, show_progress="hidden")
