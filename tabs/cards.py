"""Compare's answer cards: one per method, the short answer, its source, the raw output and every cost; the same
renderer draws a question live in the Compare tab and reopened from History.

    python -c "from tabs.cards import render_cards; print(render_cards({'rag': None}, 'waiting'))"
"""

from __future__ import annotations

import html
from types import SimpleNamespace

METHOD_TITLES = {"base": "Base (no knowledge)", "rag": "RAG (retrieved chunks)", "cag": "CAG (cached document)",
                 "full": "Full context (no cache)"}
CARD_CSS = ("display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:12px")


def _fmt(value, unit: str, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}".strip()


def render_cards(updates: dict[str, object], waiting: str = "", break_even: list[str] | None = None,
                 element_id: str = "compare-cards") -> str:
    """One card per method: the short answer, where it came from, the raw output, and every cost; then, once every
    answer is in, after how many questions CAG's cache and each adapter's training pay for themselves."""
    cards = []
    for method, u in updates.items():
        title = METHOD_TITLES.get(method, f"Fine-tuned ({method[3:]})" if method.startswith("ft:") else method)
        if u is None:
            body = f"<i>{html.escape(waiting or 'waiting for its turn…')}</i>"
        elif u.error:
            body = f"<div style='color:#b91c1c'>⚠️ {html.escape(u.error)}</div>"
        elif getattr(u, "note", "") and not u.text and not u.done:
            body = f"<i class='lab-note'>{html.escape(u.note)}</i>"
        else:
            m = u.metrics
            rows = [("retrieval", _fmt(m.get("retrieval_ms"), "ms", 1)), ("time to first token", _fmt(m.get("ttft_s"), "s")),
                    ("decode", _fmt(m.get("decode_tokens_per_s"), "tok/s", 1)), ("total", _fmt(m.get("total_s"), "s")),
                    ("tokens in context", str(m.get("context_tokens", "—"))), ("cache size", _fmt(m.get("cache_mb"), "MB", 1))]
            table = "".join(f"<tr><td>{k}</td><td style='text-align:right'><b>{v}</b></td></tr>" for k, v in rows)
            chunks = "".join(f"<li><b>{c.score:.2f}</b> {html.escape(c.text[:160])}…</li>" for c in u.chunks)
            body = (f"<div class='lab-answer' style='font-size:1.1em;margin:4px 0'><b>{html.escape(u.answer or '…')}</b></div>"
                    + (f"<div class='lab-citation' style='font-size:0.8em;color:#374151'>source: "
                       f"{html.escape(u.citation.heading or u.citation.text[:80])}</div>"
                       if getattr(u, "citation", None) is not None and u.done else "")
                    + f"<div style='color:#6b7280;font-size:0.85em;white-space:pre-wrap'>{html.escape(u.text)}</div>"
                    f"<table style='width:100%;font-size:0.85em;margin-top:6px'>{table}</table>"
                    + (f"<details><summary>retrieved chunks</summary><ol>{chunks}</ol></details>" if chunks else "")
                    + ("" if u.done else "<div><i>streaming…</i></div>"))
        cards.append(f"<div class='lab-card' data-method='{html.escape(method)}' style='border:1px solid #e5e7eb;"
                     f"border-radius:8px;padding:10px'><div style='font-weight:600;margin-bottom:4px'>"
                     f"{html.escape(title)}</div>{body}</div>")
    note = ""
    if break_even:
        items = "".join(f"<li>{markdown_bold(html.escape(line))}</li>" for line in break_even)
        note = (f"<div id='compare-break-even' style='margin-top:8px;font-size:0.9em'><b>Break-even against full "
                f"context</b> (from the costs above)<ul>{items}</ul></div>")
    return f"<div id='{element_id}' style='{CARD_CSS}'>{''.join(cards)}</div>{note}"


def markdown_bold(text: str) -> str:
    """The break-even sentences mark numbers with **...**; this HTML card shows them bold."""
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def stored_cards(answers: list[dict], element_id: str) -> str:
    """History's kept answers (method, answer, text, error, metrics, chunks as dicts) drawn as the live cards were."""
    updates = {a["method"]: SimpleNamespace(
        answer=a["answer"], text=a["text"], error=a["error"], metrics=a["metrics"] or {}, done=True, note="",
        citation=None, chunks=[SimpleNamespace(score=c["score"], text=c["text"]) for c in a["chunks"]])
        for a in answers}
    return render_cards(updates, element_id=element_id)
