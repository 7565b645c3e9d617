"""Load test: N concurrent browser-like clients asking one running app, each through its own session.

    python -m lab bench serve --clients 8 --workload chat --json    # Playground chat, 64 greedy tokens
    python -m lab bench serve --clients 8 --json                    # the Compare/Arena mix (default)
    python -m lab bench serve --arena 4 --json                      # 4-column Arena vs its columns alone
    python -m lab bench serve --peer --json                         # chat, then `transformers serve` (lab.bench.peer)

Starts the real app (`app.py`) as a subprocess on a free loopback port, warms it up (model loaded,
RAG index built), then, in the same run, asks every distinct request once with one client alone
and then all requests with N clients at once (`gradio_client` sessions created before the clock
starts), and prints one JSON object: throughput and tokens/s at N clients over one client alone,
latency percentiles, the server's memory before and after, what the session manager holds, and
whether every greedy answer equals the same request's answer alone. `--arena N` instead times one
N-column Arena request against each of its columns sent alone. Every request goes to 127.0.0.1
only; each has a timeout and the number of requests is fixed, so the run always ends. The server
is ended by its process group id.
"""

from __future__ import annotations

import html
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from lab.bench.configs import ServeBenchConfig
from lab.core.settings import REPO_ROOT
from lab.inference.configs import MAX_COLUMNS

CHAT_PROMPTS = (
    "What is the capital of France?",
    "Give me one tip for learning a new language.",
    "Explain what a cache is in one sentence.",
    "Name three primary colours.",
    "Why is the sky blue?",
    "Write a short poem about a river.",
    "What does a learning rate control in training?",
    "How do I boil an egg?",
)
"""Short chat prompts (about 40 tokens with the chat template); request k of the run asks prompt k mod 8."""

MIXED_QUESTION = "What does RAG retrieve before answering?"
ARENA_PROMPT = "Name one benefit of LoRA."
PLAYGROUND_TOKENS = re.compile(r"\*\*(\d+)\*\* new tokens")  # tabs/system.py timings_markdown
ARENA_TOKENS = re.compile(r"(\d+) tokens")  # tabs/arena.py _timings
CARD_TEXT = re.compile(r"white-space:pre-wrap'>(.*?)</div>", re.S)  # tabs/compare.py render_cards: raw output


@dataclass
class Reply:
    key: int
    """Which distinct request this was (chat: the prompt's index; mixed: 0 Compare, 1 Arena)."""
    answer: str
    """The generated text(s), joined: what greedy equality compares."""
    tokens: int
    """New tokens the app reports for it (Compare cards show none, so Compare counts 0)."""
    latency_s: float


@dataclass
class Phase:
    replies: list[Reply]
    errors: list[str]
    wall_s: float

    @property
    def rps(self) -> float:
        return len(self.replies) / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return sum(r.tokens for r in self.replies) / self.wall_s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def _tokens(pattern: re.Pattern, note: str) -> int:
    found = pattern.search(note or "")
    if not found:
        raise RuntimeError(f"no token count in the app's timings: {note!r}")
    return int(found.group(1))


def _message_text(message) -> str:
    """A Chatbot message as gradio_client returns it: a dict whose content is text or a list of parts."""
    content = message["content"] if isinstance(message, dict) else message
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return str(content)


def _submit(client, timeout_s: float, *args, api_name: str):
    return client.submit(*args, api_name=api_name).result(timeout=timeout_s)


def ask_playground(client, cfg: ServeBenchConfig, model_id: str, prompt: str) -> tuple[str, int]:
    """One greedy Playground request (tabs/system.py `playground`): prompt, max_new_tokens, temperature, model id."""
    answer, timings = _submit(client, cfg.request_timeout_s, prompt, cfg.new_tokens, 0.0, model_id,
                              api_name="/playground")
    return answer, _tokens(PLAYGROUND_TOKENS, timings)


def ask_arena(client, cfg: ServeBenchConfig, model_id: str, n_columns: int, prompt: str = ARENA_PROMPT) -> list[tuple[str, int]]:
    """One Arena request (tabs/arena.py `send`): prompt, columns, chat mode, then (model, temperature,
    max_new_tokens) for each of the 4 columns; the chat-history State is not part of the API. Returns each
    used column's (answer, new tokens); a column that failed raises.

    Token counts come from the last note of each column that had one, over every streamed update: when a
    later column waits for the GPU, `send` writes the waiting line over every column's note, finished ones
    included, so the final update can show a finished column as waiting."""
    column = [model_id, 0.0, cfg.new_tokens]
    job = client.submit(prompt, n_columns, False, *column * MAX_COLUMNS, api_name="/arena")
    final = job.result(timeout=cfg.request_timeout_s)
    updates = [out for out in job.outputs() if isinstance(out, (tuple, list))] or [final]
    replies = []
    for i in range(n_columns):
        notes = [out[MAX_COLUMNS + i] or "" for out in updates]
        failed = next((note for note in notes if "⚠️" in note), None)
        if failed:
            raise RuntimeError(f"arena column {i + 1}: {failed}")
        counted = [note for note in notes if ARENA_TOKENS.search(note)]
        replies.append((_message_text(final[i][-1]), _tokens(ARENA_TOKENS, counted[-1] if counted else notes[-1])))
    return replies


def ask_compare(client, cfg: ServeBenchConfig) -> tuple[str, int]:
    """One Compare request (tabs/compare.py `ask`): question, methods, chunk size, overlap, top-k, max new tokens,
    short answer, 4-bit; the document State is not part of the API. Returns the raw outputs of its cards."""
    cards = _submit(client, cfg.request_timeout_s, MIXED_QUESTION, ["rag", "base"], 500, 50, 3, cfg.new_tokens,
                    True, False, api_name="/compare")
    if "⚠️" in cards:
        raise RuntimeError(f"compare card error: {html.unescape(re.sub('<[^>]+>', ' ', cards)).strip()[:300]}")
    return "\n---\n".join(html.unescape(t) for t in CARD_TEXT.findall(cards)), 0


def ask_workload(client, cfg: ServeBenchConfig, model_id: str, key: int) -> tuple[str, int]:
    if cfg.workload == "chat":
        return ask_playground(client, cfg, model_id, CHAT_PROMPTS[key])
    if key == 0:
        return ask_compare(client, cfg)
    columns = ask_arena(client, cfg, model_id, 2)
    return "\n---\n".join(text for text, _ in columns), sum(tokens for _, tokens in columns)


def distinct_requests(cfg: ServeBenchConfig) -> int:
    return len(CHAT_PROMPTS) if cfg.workload == "chat" else 2


def plan(cfg: ServeBenchConfig) -> list[list[int]]:
    """The keys each client asks, in order: request k of the run (client c, turn j: k = c * per_client + j)
    asks distinct request k mod D, so every distinct request is asked about equally often."""
    n, per = distinct_requests(cfg), cfg.requests_per_client
    return [[(c * per + j) % n for j in range(per)] for c in range(cfg.clients)]


def run_phase(clients: list, keys: list[list[int]], ask: Callable[[object, int], tuple[str, int]],
              timeout_s: float) -> Phase:
    """Each client in its own thread asks its keys in turn; all start together. A request still unanswered
    when its client's time is up counts as an error."""
    replies: list[Reply] = []
    errors: list[str] = []

    def worker(client, mine: list[int]) -> None:
        for key in mine:
            start = time.perf_counter()
            try:
                answer, tokens = ask(client, key)
            except Exception as exc:  # a failed request is data for the report, not the end of the run
                errors.append(f"{type(exc).__name__}: {exc}"[:500])
                continue
            replies.append(Reply(key, answer, tokens, time.perf_counter() - start))

    threads = [threading.Thread(target=worker, args=(c, k), daemon=True) for c, k in zip(clients, keys)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    deadline = start + timeout_s * max(len(k) for k in keys) + 5
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    wall_s = time.perf_counter() - start
    done, failed = list(replies), list(errors)
    failed += ["timed out"] * (sum(map(len, keys)) - len(done) - len(failed))
    return Phase(done, failed, wall_s)


def greedy_check(alone: dict[int, str], replies: list[Reply]) -> tuple[bool | None, list[dict]]:
    """(every reply equals its request's answer alone, up to 3 mismatches); None when nothing was answered."""
    if not replies:
        return None, []
    bad = [{"request": r.key, "alone": alone.get(r.key), "concurrent": r.answer} for r in replies
           if alone.get(r.key) != r.answer]
    return not bad, [{k: (v[:120] if isinstance(v, str) else v) for k, v in b.items()} for b in bad[:3]]


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None


@dataclass
class App:
    url: str
    pid: int
    log: object
    """The app's stdout and stderr (a temporary file), for the message when something fails."""

    def log_tail(self, chars: int = 3000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]


@contextmanager
def running_app(cfg: ServeBenchConfig, data_dir: Path | None = None, extra_env: dict[str, str] | None = None,
                auth: tuple[str, str] | None = None) -> Iterator[App]:
    """The app as a subprocess on a free loopback port, ended by its process group. Sign-in is off unless
    `extra_env` sets LAB_AUTH (then `auth` is a user and password the start-up check signs in with)."""
    from gradio_client import Client
    port = _free_port()
    env = os.environ | {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "LAB_AUTH": ""}
    env |= extra_env or {}
    if data_dir is not None:
        env["LAB_DATA_DIR"] = str(data_dir)
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        app = App(f"http://127.0.0.1:{port}/", server.pid, log)
        try:
            deadline = time.time() + cfg.startup_timeout_s
            while True:
                try:
                    Client(app.url, verbose=False, auth=auth)
                    break
                except Exception:
                    if server.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"the app did not start on {app.url} (exit code {server.poll()}):\n"
                                           f"{app.log_tail()}") from None
                    time.sleep(1)
            yield app
        finally:
            end_group(server)


def end_group(server: subprocess.Popen) -> None:
    """End a server started with start_new_session=True, and whatever it started, by its process group id."""
    try:
        os.killpg(server.pid, 15)
    except ProcessLookupError:  # the group has already gone; wait() still reaps the server
        pass
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, 9)
        server.wait(30)


def warm_up(app: App, ask: Callable[[], object]) -> None:
    """One request before anything is timed (loads the model, builds the RAG index); its failure ends the run
    with the app's own log, since every timed request would fail the same way."""
    try:
        ask()
    except Exception as exc:
        raise RuntimeError(f"the warm-up request failed ({type(exc).__name__}: {exc}); the app's log ends:\n"
                           f"{app.log_tail()}") from exc


def _server_facts(client, pid: int, rss_before: float) -> dict:
    stats = client.predict(api_name="/system_stats")
    rss_after = _rss_mb(pid)
    return {"rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
            "rss_growth_pct": round(100 * (rss_after - rss_before) / rss_before, 2),
            "models_loaded": sum(1 for e in stats["entries"] if e["kind"] == "model"),
            "model_load_counts": stats["load_counts"], "load_1min_after": round(os.getloadavg()[0], 2)}


def bench_serve(cfg: ServeBenchConfig, data_dir: Path | None = None) -> dict:
    """Run the load test (or, with cfg.arena, the Arena measurement) and return the JSON-ready result."""
    from gradio_client import Client
    load_before = round(os.getloadavg()[0], 2)
    model_id = os.environ.get("LAB_MODEL") or "embedded"
    with running_app(cfg, data_dir) as app:
        client = Client(app.url, verbose=False)
        if cfg.arena:
            result = _bench_arena(app, client, cfg, model_id)
        else:
            result, _ = _bench_workload(app, client, cfg, model_id)
    return {"load_1min_before": load_before, **result}


def _bench_workload(app: App, client, cfg: ServeBenchConfig, model_id: str) -> tuple[dict, dict[int, str]]:
    """(the JSON-ready result, each distinct request's answer alone)."""
    from gradio_client import Client

    def ask(c, key: int) -> tuple[str, int]:
        return ask_workload(c, cfg, model_id, key)

    for key in range(min(2, distinct_requests(cfg))):  # chat: one prompt; mixed: Compare and Arena once
        warm_up(app, lambda k=key: ask(client, k))
    keys = plan(cfg)
    distinct = sorted({k for mine in keys for k in mine})
    rss_before = _rss_mb(app.pid)
    alone = run_phase([client], [distinct], ask, cfg.request_timeout_s)
    clients = [Client(app.url, verbose=False) for _ in range(cfg.clients)]  # connected before the clock starts
    many = run_phase(clients, keys, ask, cfg.request_timeout_s)
    facts = _server_facts(client, app.pid, rss_before)
    equal, mismatches = greedy_check({r.key: r.answer for r in alone.replies}, many.replies)
    lat = [r.latency_s for r in many.replies]
    errors = many.errors + alone.errors
    result = {"workload": cfg.workload, "clients": cfg.clients, "requests": sum(map(len, keys)), "errors": len(errors),
            "max_new_tokens": cfg.new_tokens,
            "throughput_ratio": round(many.rps / alone.rps, 3) if alone.replies else None,
            "tokens_per_s_ratio": (round(many.tokens_per_s / alone.tokens_per_s, 3)
                                   if alone.tokens_per_s and many.replies else None),
            "latency_p50_s": round(statistics.median(lat), 3) if lat else None, "latency_p95_s": percentile(lat, 0.95),
            "throughput_rps": round(many.rps, 4), "single_client_rps": round(alone.rps, 4),
            "tokens_per_s": round(many.tokens_per_s, 2), "single_client_tokens_per_s": round(alone.tokens_per_s, 2),
            "wall_s": round(many.wall_s, 2), "single_client_wall_s": round(alone.wall_s, 2),
            "single_client_requests": len(distinct), "single_client_latency_p50_s":
                round(statistics.median([r.latency_s for r in alone.replies]), 3) if alone.replies else None,
            "greedy_equal": equal, "greedy_compared": len(many.replies), "greedy_mismatches": mismatches,
            **facts, "answer_samples": [r.answer[:120] for r in alone.replies[:2]], "error_samples": errors[:3]}
    return result, {r.key: r.answer for r in alone.replies}


def _bench_arena(app: App, client, cfg: ServeBenchConfig, model_id: str) -> dict:
    """One N-column Arena request against each of its columns alone. The Arena takes 2 to 4 columns, so a
    column alone is the same prompt, model and greedy settings through the Playground, which builds the
    same chat prompt (lab.inference.generate.prompt_ids) and streams through the same generator."""
    n, errors = cfg.arena, []
    warm_up(app, lambda: ask_playground(client, cfg, model_id, ARENA_PROMPT))
    rss_before = _rss_mb(app.pid)
    alone: list[tuple[float, str, int]] = []  # (seconds, answer, new tokens) of each column sent alone
    for _ in range(n):
        start = time.perf_counter()
        try:
            text, tokens = ask_playground(client, cfg, model_id, ARENA_PROMPT)
            alone.append((time.perf_counter() - start, text, tokens))
        except Exception as exc:  # reported in the result, like a failed request of the workload
            errors.append(f"{type(exc).__name__}: {exc}"[:500])
    start = time.perf_counter()
    try:
        together = ask_arena(client, cfg, model_id, n)
    except Exception as exc:
        together = []
        errors.append(f"{type(exc).__name__}: {exc}"[:500])
    arena_s = time.perf_counter() - start
    slowest = max((s for s, _, _ in alone), default=None)
    answers = [text for _, text, _ in alone] + [text for text, _ in together]
    return {"workload": "arena", "arena_columns": n, "clients": 1, "requests": n + 1, "errors": len(errors),
            "max_new_tokens": cfg.new_tokens, "arena_s": round(arena_s, 3) if together else None,
            "column_alone_s": [round(s, 3) for s, _, _ in alone],
            "slowest_column_alone_s": round(slowest, 3) if slowest else None,
            # Columns run one after another give arena_s near this sum; run together, near the slowest.
            "columns_alone_sum_s": round(sum(s for s, _, _ in alone), 3),
            "arena_ratio": round(arena_s / slowest, 3) if together and slowest else None,
            "arena_tokens": [t for _, t in together], "column_alone_tokens": [t for _, _, t in alone],
            # Every column is the same greedy request, so every answer, alone or in the Arena, must be one text.
            "greedy_equal": len(set(answers)) == 1 if together and alone else None,
            **_server_facts(client, app.pid, rss_before),
            "answer_samples": answers[:1], "error_samples": errors[:3]}
