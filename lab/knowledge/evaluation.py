"""Batch evaluation: run a QA set through several Compare methods and score the answers.

    python -m lab eval --qa assets/knowledge/qa.jsonl --methods base,rag,cag,full --limit 30 --out results.json
    python -m lab eval --set heldout --methods base,rag,cag --out heldout.json   # sets: lab.knowledge.configs
    python -m lab eval --set heldout-notes --methods rag --retrieval hybrid --limit 20 --csv notes.csv

(Named evaluate_qa, not evaluate, so it never shadows the `evaluate` package.) Each line of the
QA file is `{"question": ..., "answer": ...}`. Every (question, method) pair is answered with
lab.knowledge.compare's streaming path, one at a time through the GPU queue; answers are scored with the
lab's local metric modules (exact match, SQuAD token F1, ROUGE-L, BLEU, all 0..1) and latency is
summarised as p50/p95 per method. RAG rows also say whether the reference answer was among the retrieved
chunks (retrieved, hit_rank; recall_at_k per method): a wrong answer is then a retrieval or a reading failure.
A run can be cancelled with a threading.Event: it stops within the
answer in progress and returns the rows already scored, marked cancelled.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.core.checks import check_question_length
from lab.core.files import iter_jsonl
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA
from lab.inference.runtime import Runtime
from lab.knowledge.compare import MethodUpdate, check_request, stream_compare
from lab.knowledge.configs import CompareConfig
from lab.knowledge.documents import Document, load_document
from lab.knowledge.metrics import normalise, score_answers, score_one
from lab.knowledge.rag import RetrievedChunk, holds_answer

SCORES = ("exact_match", "f1", "rouge_l", "bleu")
ROW_FIELDS = ("index", "method", "question", "reference", "answer", "raw", "error", *SCORES, "retrieved", "hit_rank",
              "latency_s", "ttft_s", "retrieval_ms", "context_tokens", "new_tokens", "cache_mb", "citation")
"""Columns of a result row, in CSV order. retrieved / hit_rank (RAG only, else None): whether the reference answer,
normalised as F1 normalises it, is in one of the retrieved chunks, and the 1-based rank of the first that holds it.
They tell a retrieval failure (the answer never reached the model) from a reading failure (it did; F1 is still low)."""

Progress = Callable[[int, int, str], None]
"""progress(done, total, message), called before the first answer and after each one."""


@dataclass(frozen=True)
class QAItem:
    question: str
    answer: str
    line: int
    """1-based line number in the file, for messages."""


def load_qa(path: str | Path, limit: int | None = None) -> list[QAItem]:
    """Read a QA JSONL file; a malformed line raises ValueError naming the line and the problem."""
    path = Path(path)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
    if not path.is_file():
        raise ValueError(f"QA file not found: {str(path)!r}")
    items: list[QAItem] = []
    for number, record in iter_jsonl(path):
        where = f"{path.name} line {number}"
        if not isinstance(record, dict):
            raise ValueError(f"{where} must be a JSON object with \"question\" and \"answer\", got {type(record).__name__}")
        for key in ("question", "answer"):
            if key not in record:
                raise ValueError(f"{where} has no \"{key}\" field")
            if not isinstance(record[key], str) or not record[key].strip():
                raise ValueError(f"{where}: \"{key}\" must be a non-empty string, got {record[key]!r}")
        items.append(QAItem(record["question"].strip(), record["answer"].strip(), number))
        if limit is not None and len(items) == limit:
            break
    if not items:
        raise ValueError(f"{path.name} has no questions; write one JSON object per line with \"question\" and \"answer\"")
    return items


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def hit_rank(chunks: Sequence[RetrievedChunk], reference: str) -> int | None:
    """1-based rank of the first retrieved chunk that holds the reference answer (as F1 normalises both), None if
    none does."""
    wanted = normalise(reference)
    return next((rank for rank, chunk in enumerate(chunks, start=1) if holds_answer(chunk, wanted)), None)


def _row(index: int, item: QAItem, update: MethodUpdate, latency_s: float) -> dict:
    m = update.metrics
    scores = score_one(update.answer, item.answer) if update.error is None else dict.fromkeys(SCORES)
    rank = hit_rank(update.chunks, item.answer) if update.chunks else None
    return {"index": index, "method": update.method, "question": item.question, "reference": item.answer,
            "answer": update.answer, "raw": update.text, "error": update.error, **scores,
            "retrieved": (rank is not None) if update.chunks else None, "hit_rank": rank,
            "latency_s": round(latency_s, 4) if update.error is None else None, "ttft_s": m.get("ttft_s"),
            "retrieval_ms": m.get("retrieval_ms"), "context_tokens": m.get("context_tokens"),
            "new_tokens": m.get("new_tokens"), "cache_mb": m.get("cache_mb"),
            "citation": update.citation.heading if update.citation else None}


def questions_for(doc: Document, qa_path: str | Path | None, limit: int | None = None) -> list[QAItem]:
    """The questions to score `doc` on: the given QA file, or with none the bundled set, which is about the
    bundled guide only (the same text, under any name): asked of another document it would measure nothing."""
    if qa_path is None:
        if doc.sha256 != load_document(BUNDLED_DOC).sha256:
            raise ValueError(f"An evaluation of {doc.name} needs a QA file: a .jsonl file with one JSON object per "
                             'line, {"question": "...", "answer": "..."}, about this document. The bundled '
                             "questions are about the bundled guide only.")
        qa_path = BUNDLED_QA
    return load_qa(qa_path, limit)


def summarise(rows: list[dict], methods: Sequence[str], unanswered: str = "no questions were asked") -> dict[str, dict]:
    """Per method: the four scores over answered rows, recall@k (the share of its questions whose reference was in
    a retrieved chunk; None for methods that retrieve nothing), latency p50/p95, TTFT p50, counts; a method with
    no row says why with `unanswered`."""
    summary: dict[str, dict] = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        answered = [r for r in mine if r["error"] is None]
        entry: dict = {"n": len(answered), "errors": len(mine) - len(answered)}
        if answered:
            scores = score_answers([r["answer"] for r in answered], [r["reference"] for r in answered])
            entry |= {k: round(scores[k], 4) for k in SCORES}
        else:
            entry |= dict.fromkeys(SCORES)
            entry["error"] = next((r["error"] for r in mine if r["error"]), unanswered)
        found = [r["retrieved"] for r in answered if r.get("retrieved") is not None]
        entry["recall_at_k"] = round(sum(found) / len(found), 4) if found else None
        latencies = [r["latency_s"] for r in answered]
        entry |= {"latency_p50_s": _percentile(latencies, 50), "latency_p95_s": _percentile(latencies, 95),
                  "ttft_p50_s": _percentile([r["ttft_s"] for r in answered], 50)}
        summary[method] = entry
    return summary


def _answer(runtime: Runtime, doc: Document, question: str, method: str, cfg: CompareConfig, caller: str,
            cancel: threading.Event | None) -> MethodUpdate | None:
    """One method's final update for one question, or None when `cancel` was set while it streamed: the stream is
    then closed at once, which cancels its batched request (or releases the model) instead of decoding on. An
    answer that ended in an error because its request was cancelled along with the run is dropped too."""
    final = None
    with closing(stream_compare(runtime, doc, question, [method], cfg, caller)) as stream:
        for update in stream:
            if update.done:
                final = update
            elif cancel is not None and cancel.is_set():
                return None
    if cancel is not None and cancel.is_set() and (final is None or final.error):
        return None
    return final


def evaluate(runtime: Runtime, doc: Document, items: Sequence[QAItem], methods: str | Sequence[str],
             cfg: CompareConfig | None = None, progress: Progress | None = None,
             cancel: threading.Event | None = None, caller: str | None = None) -> dict:
    """Answer every question with every method and score it.

    Returns {"methods": {name: {exact_match, f1, rouge_l, bleu, recall_at_k, latency_p50_s, latency_p95_s,
    ttft_p50_s, n, errors}}, "rows": [...] (each with retrieved and hit_rank, see ROW_FIELDS), "document",
    "model", "questions", "elapsed_s", "cancelled", "answered", "answers"}. Methods run one after another over
    the whole set, so a cache or adapter is set up once. Setting `cancel` stops the run within the answer in
    progress (that answer is dropped); the result then holds the rows scored before it, with cancelled=True and
    answered < answers. `caller` names the run's requests
    in the session manager (whose share they count in, what cancelling a caller stops).
    """
    if not items:
        raise ValueError("The QA set is empty; give at least one question.")
    # Every question is checked before the first is answered: a long one late in the set would otherwise be
    # found only after minutes of answering, or be tokenized first.
    for item in items:
        check_question_length(item.question, f"The question on line {item.line}")
    names = check_request(runtime, items[0].question, methods)
    cfg = cfg or CompareConfig()
    caller = caller or runtime.sessions.new_caller("eval")
    total, rows = len(items) * len(names), []
    started = time.perf_counter()
    if progress:
        progress(0, total, f"starting {len(items)} questions x {len(names)} methods")
    cancelled = False
    for method in names:
        for index, item in enumerate(items):
            final = None if cancel is not None and cancel.is_set() else _answer(
                runtime, doc, item.question, method, cfg, caller, cancel)
            if final is None:
                cancelled = True
                break
            rows.append(_row(index, item, final, final.metrics.get("total_s") or 0.0))
            if progress:
                progress(len(rows), total, f"{method}: {index + 1}/{len(items)}")
        if cancelled:
            break
    spec = runtime.spec(cfg.model_id, cfg.load_in_4bit)
    return {"methods": summarise(rows, names, "cancelled before this method answered" if cancelled else
                                 "no questions were asked"),
            "rows": rows, "document": doc.name, "model": spec.model_id,
            "load_in_4bit": spec.load_in_4bit, "questions": len(items), "elapsed_s": round(time.perf_counter() - started, 2),
            "cancelled": cancelled, "answered": len(rows), "answers": total,  # answers: questions x methods
            "settings": dataclasses.asdict(cfg)}  # chunking, top-k, token limits: what the scores were measured with


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """One line per (question, method), columns as in ROW_FIELDS."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
