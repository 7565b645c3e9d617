"""History tab: your kept comparisons, evaluations, Arena transcripts and battles; search, reopen, export, delete.

    python app.py   # then open the History tab
"""

from __future__ import annotations

import html
import json
from datetime import datetime

import gradio as gr
import pandas as pd

from lab.engine import Engine
from tabs.cards import stored_cards
from tabs.common import POLL, USER_ERRORS, user_error

LIST_COLUMNS = ["id", "kind", "when", "title", "detail"]
BOX = "border:1px solid #e5e7eb;border-radius:8px;padding:10px"
VOTES = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both are bad"}
GRID = "display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:12px"


def _esc(value) -> str:
    return html.escape(str(value))


def _settings(settings: dict) -> str:
    return (f"<details><summary>settings</summary><pre style='white-space:pre-wrap'>"
            f"{_esc(json.dumps(settings, indent=2, ensure_ascii=False))}</pre></details>")


def _compare(item: dict) -> str:
    return (f"<p><b>Question:</b> {_esc(item['question'])}<br><b>Document:</b> {_esc(item['document'])} · "
            f"<b>Model:</b> {_esc(item['model'])}</p>{stored_cards(item['answers'], 'history-cards')}"
            + _settings(item["settings"]))


def _evaluation(item: dict) -> str:
    scores = pd.DataFrame([{"method": name, **row} for name, row in item["methods"].items()])
    return (f"<p><b>Document:</b> {_esc(item['document'])} · <b>Model:</b> {_esc(item['model'])} · "
            f"{item['questions']} questions</p>{scores.to_html(index=False, na_rep='—', border=0)}"
            + _settings(item["settings"]))


def _arena(item: dict) -> str:
    columns = []
    for i, column in enumerate(item.get("columns", []), 1):
        turns = "".join(f"<p><b>{_esc(m['role'])}:</b> {_esc(m['content'])}</p>" for m in column["messages"])
        columns.append(f"<div style='{BOX}'><div style='font-weight:600'>Column {i}: {_esc(column['choice'])}</div>"
                       f"{turns}{_settings(column['settings'])}</div>")
    return f"<div style='{GRID}'>{''.join(columns)}</div>"


def _battle(item: dict) -> str:
    sides = []
    for side in ("a", "b"):
        data = item[side]
        who = _esc(data["name"]) if data["name"] else "<i>hidden until you vote</i>"
        text = f"⚠️ {_esc(data['error'])}" if data["error"] else _esc(data["text"])
        sides.append(f"<div style='{BOX}'><div style='font-weight:600'>Model {side.upper()}: {who}</div>"
                     f"<div style='white-space:pre-wrap'>{text}</div></div>")
    vote = f"your vote: <b>{VOTES[item['winner']]}</b>" if item["winner"] else "not voted yet"
    return (f"<p><b>Prompt:</b> {_esc(item['prompt'])}<br><b>Document:</b> {_esc(item['document'] or '—')} · "
            f"{vote}</p><div style='{GRID}'>{''.join(sides)}</div>" + _settings(item["settings"]))


RENDER = {"compare": _compare, "evaluation": _evaluation, "arena": _arena, "battle": _battle}


def render_record(item: dict) -> str:
    """A kept record as it was shown: Compare's cards with their costs, scores, an Arena chat, or a battle."""
    return (f"<div id='history-record-body'><h3>{_esc(item['id'])} · {_esc(item['when'])}</h3>"
            f"{RENDER[item['kind']](item)}</div>")


def build(engine: Engine) -> None:
    def listing(search: str, kinds: list[str], request: gr.Request):
        try:
            items = engine.history.items(engine.uploads.user_of(request.username), search or "", kinds or [])
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        frame = pd.DataFrame([[i[c] for c in LIST_COLUMNS] for i in items], columns=LIST_COLUMNS)
        ids = [i["id"] for i in items]
        return frame, gr.update(choices=ids, value=ids[0] if ids else None)

    def reopen(item_id: str | None, request: gr.Request):
        if not item_id:
            return "<i>Pick a record from the list.</i>"
        try:
            return render_record(engine.history.item(engine.uploads.user_of(request.username), item_id))
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    def delete(item_id: str | None, search: str, kinds: list[str], request: gr.Request):
        if not item_id:
            raise gr.Error("Pick a record to delete first.")
        try:
            engine.history.delete(engine.uploads.user_of(request.username), item_id)
        except USER_ERRORS as exc:
            raise user_error(exc) from exc
        gr.Info(f"Deleted {item_id}.")
        return *listing(search, kinds, request), f"<i>{html.escape(item_id)} was deleted.</i>"

    def export(search: str, request: gr.Request):
        stem = datetime.now().strftime("history-%Y%m%d-%H%M%S")
        try:
            return [str(p) for p in engine.history.export(engine.uploads.user_of(request.username), stem, search or "")]
        except USER_ERRORS as exc:
            raise user_error(exc) from exc

    def picked(frame: pd.DataFrame, event: gr.SelectData):
        """Clicking a row of the list picks its record."""
        return frame.iloc[event.index[0]]["id"]

    with gr.Tab("History", id="history") as tab:
        gr.Markdown("Everything you compared, evaluated and battled is kept here, visible to you only. Search it, "
                    "reopen a record to see its answers, costs and settings as they were, export it (JSON and CSV "
                    "into your workspace) or delete it. A battle's vote stays on the shared leaderboard.")
        with gr.Row():
            search = gr.Textbox(label="Search", placeholder="words from a question, prompt, answer or document",
                                scale=3, elem_id="history-search")
            kinds = gr.CheckboxGroup(list(engine.history.KINDS), value=list(engine.history.KINDS), label="Show",
                                     scale=2)
            refresh_btn = gr.Button("Refresh", scale=1, elem_id="history-refresh")
        table = gr.Dataframe(pd.DataFrame(columns=LIST_COLUMNS), interactive=False, label="Your history, newest first",
                             elem_id="history-list")
        with gr.Row():
            record = gr.Dropdown([], label="Record", scale=2, elem_id="history-id")
            open_btn = gr.Button("Reopen", variant="primary", scale=1, elem_id="history-open")
            delete_btn = gr.Button("Delete", variant="stop", scale=1, elem_id="history-delete")
            export_btn = gr.Button("Export the list (JSON and CSV)", scale=1, elem_id="history-export")
        shown = gr.HTML("<i>Pick a record and press Reopen.</i>", elem_id="history-record")
        exported = gr.File(label="Exported into your workspace", file_count="multiple", interactive=False,
                           height=90)

        # The list follows what changed elsewhere (a vote, a compare) each time the tab is opened.
        gr.on([tab.select, refresh_btn.click, search.submit, kinds.input], listing, [search, kinds], [table, record],
              api_name="history", **POLL)
        table.select(picked, table, record, **POLL).then(reopen, record, shown, **POLL)
        open_btn.click(reopen, record, shown, api_name="history_open", **POLL)
        delete_btn.click(delete, [record, search, kinds], [table, record, shown], api_visibility="private", **POLL)
        export_btn.click(export, search, exported, api_name="history_export", **POLL)
