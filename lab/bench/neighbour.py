"""Noisy neighbour: does one user's backlog, or one user's document build, slow another user down?

    python -m lab bench serve --noisy-neighbour --json

Starts the real app with sign-in on and two users, bob and alice, each through their own `gradio_client`
session, and measures in one run:
- `alone_latency_s`: alice's Playground request (16 greedy tokens) with nobody else asking (median of 3);
- `neighbour_latency_s`: the same request sent while bob has `NEIGHBOUR_REQUESTS` (30) Playground requests in
  flight, sent 1.5 s before hers; `neighbour_ratio` is the second over the first (target: at most 2);
- `rag_alone_s` and `rag_during_build_s`: alice's RAG question on the bundled guide, whose index is already built,
  alone and while bob's first RAG question on his own document (5,000 one-line headings, ~80 KB) builds its
  index; `rag_during_build_ratio` is the second over the first (target: at most 2).
Every request has a timeout, so the run always ends; the app is ended by its process group.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from lab.bench.serve import CHAT_PROMPTS, ServeBenchConfig, running_app, warm_up

NEIGHBOUR_REQUESTS = 30
NEW_TOKENS = 16
HEAD_START_S = 1.5
USERS = {"alice": "alice-bench-pw", "bob": "bob-bench-pw"}
RAG_QUESTION = "What does RAG retrieve before answering?"


def _playground(client, cfg: ServeBenchConfig, prompt: str) -> float:
    start = time.perf_counter()
    client.submit(prompt, NEW_TOKENS, 0.0, "embedded", api_name="/playground").result(timeout=cfg.request_timeout_s)
    return time.perf_counter() - start


def _rag(client, cfg: ServeBenchConfig) -> float:
    """One Compare request with RAG only (tabs/compare.py `ask`), on the document the session has picked."""
    start = time.perf_counter()
    cards = client.submit(RAG_QUESTION, ["rag"], 500, 50, 3, NEW_TOKENS, True, False,
                          api_name="/compare").result(timeout=cfg.request_timeout_s)
    if "⚠️" in cards:
        raise RuntimeError(f"a RAG card failed: {cards[:300]}")
    return time.perf_counter() - start


def many_headings(path: Path, n: int = 5000) -> Path:
    """A markdown file of n one-line sections: the document that made one user's build stall everyone. Its first
    line is new on every call, so each run builds its index (an index is kept on disk by the document's hash)."""
    path.write_text(f"# Shelf notes {uuid.uuid4().hex}\n"
                    + "".join(f"## Note {i}\nItem {i} is filed under shelf {i % 97}.\n" for i in range(n)),
                    encoding="utf-8")
    return path


def bench_neighbour(cfg: ServeBenchConfig, data_dir: Path | None = None) -> dict:
    from gradio_client import Client, handle_file
    auth = ",".join(f"{u}:{p}" for u, p in USERS.items())
    with running_app(cfg, data_dir, {"LAB_AUTH": auth, "LAB_ADMINS": ""}, auth=("alice", USERS["alice"])) as app:
        alice = Client(app.url, verbose=False, auth=("alice", USERS["alice"]))
        bob = Client(app.url, verbose=False, auth=("bob", USERS["bob"]))
        warm_up(app, lambda: (_playground(alice, cfg, CHAT_PROMPTS[0]), _rag(alice, cfg)))

        alone = statistics.median(_playground(alice, cfg, CHAT_PROMPTS[0]) for _ in range(3))
        backlog = [bob.submit(CHAT_PROMPTS[i % len(CHAT_PROMPTS)], NEW_TOKENS, 0.0, "embedded",
                              api_name="/playground") for i in range(NEIGHBOUR_REQUESTS)]
        time.sleep(HEAD_START_S)
        neighbour = _playground(alice, cfg, CHAT_PROMPTS[0])
        errors = 0
        for job in backlog:
            try:
                job.result(timeout=cfg.request_timeout_s)
            except Exception:  # counted: a refusal or failure of bob's requests is part of the figure
                errors += 1

        rag_alone = statistics.median(_rag(alice, cfg) for _ in range(2))
        with tempfile.TemporaryDirectory() as tmp:
            doc = many_headings(Path(tmp) / "many-headings.md")
            bob.predict("upload", handle_file(str(doc)), None, api_name="/compare_document")
            build: dict[str, float | str] = {}

            def bob_asks() -> None:
                try:
                    build["s"] = _rag(bob, cfg)
                except Exception as exc:
                    build["error"] = f"{type(exc).__name__}: {exc}"[:300]

            builder = threading.Thread(target=bob_asks, daemon=True)
            builder.start()
            time.sleep(HEAD_START_S)
            rag_during = _rag(alice, cfg)
            builder.join(cfg.request_timeout_s)
        return {"load_1min": round(os.getloadavg()[0], 2), "neighbour_requests": NEIGHBOUR_REQUESTS,
                "new_tokens": NEW_TOKENS,
                "alone_latency_s": round(alone, 3), "neighbour_latency_s": round(neighbour, 3),
                "neighbour_ratio": round(neighbour / alone, 2), "neighbour_errors": errors,
                "rag_alone_s": round(rag_alone, 3), "rag_during_build_s": round(rag_during, 3),
                "rag_during_build_ratio": round(rag_during / rag_alone, 2),
                "bob_build_and_answer_s": round(build["s"], 1) if "s" in build else None,
                "bob_build_error": build.get("error")}
