"""The lab against its peer: `transformers serve --continuous-batching` on the same machine, model and prompts.

    python -m lab bench serve --peer --json     # the chat workload on the lab, then on the peer, back to back

After the lab's own chat measurement (lab.bench.serve: one client alone, then N clients at once, through the
Playground API), the same model folder is served by `transformers serve --continuous-batching --dtype float32
--device cpu` as a subprocess on a free loopback port, and the same prompts are asked the same way: one client
alone, then N clients x M requests, 64 greedy tokens, each client its own `openai` SDK instance streaming chat
completions. `vs_peer` is the lab's N-client req/s over the peer's; `vs_peer_single` the same for one client.
The peer is ended by its process group id.

What the peer does differently from the lab, for the same transformers continuous-batching manager underneath:
- One manager for every request: it is created on the first request with that request's sampling settings, so
  a greedy server stays greedy; the lab keeps a greedy and a sampled lane so that both kinds batch.
- Text leaves a request through the tokenizers library's `DecodeStream`, which turns each new token id into its
  piece of text in constant time (holding back pieces that end inside a multi-byte character), instead of
  decoding the whole answer again on each token.
- Outputs are routed by the manager itself: a handler registered per request is called on the server's asyncio
  loop (one `call_soon_threadsafe` per generation step for the whole batch), so no thread polls a shared queue.
- Each response is a server-sent-event stream of small JSON deltas, written as soon as the loop gets to it, and
  several pending pieces of one request go out in one write; the lab sends Gradio page updates (the whole text
  so far and a timings line) through Gradio's queue.
- No admission layer of its own: whatever arrives is added to the batch at once; the lab first passes each
  request through its session manager (pins, the exclusive slot, its fair admission) and per-request threads.
- Its KV cache is sized by the library's default share of free memory (60-90% of RAM on a CPU: 13 GB of a 24 GB
  machine here); the lab's is sized for its users within a budget (lab.inference.batching.EngineConfig.for_model).
- Only its loop thread keeps running torch operations, so its OpenMP threads spin-wait between operations
  (libgomp's default). In the lab's process several threads used to run torch operations (both lanes' loops, the
  thread that built the paged caches), and libgomp spins only briefly once it manages more threads than there
  are cores: its idle threads sleep and are woken for each operation. That was the largest difference measured
  here, both ways (2 shared cores, noisy): a bare continuous-batching manager decoding one greedy answer alone in
  its process was about 1.4x as fast as with a second manager alive (which was as fast as OMP_WAIT_POLICY=PASSIVE)
  while the machine was nearly idle, and about 10x slower once other processes kept the cores busy, because a
  spinning thread holds a core its neighbours need. The lab now hands every CPU forward and each batching step
  (and each loop's start-up reset) to one forward thread (lab.inference.models.ForwardThread) and keeps one team
  as the peer does; LAB_FORWARD_THREAD=0 restores the old arrangement, to measure both on one machine.
  Both servers inherit this process's environment; the result says which OMP_WAIT_POLICY they ran under
  (PASSIVE: every idle OpenMP thread sleeps at once, in both), so compare figures taken under the same policy and
  a similar load.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.bench.serve import (
    CHAT_PROMPTS,
    App,
    Phase,
    ServeBenchConfig,
    _bench_workload,
    _free_port,
    _rss_mb,
    end_group,
    greedy_check,
    percentile,
    plan,
    run_phase,
    running_app,
    warm_up,
)
from lab.core.settings import REPO_ROOT, LabSettings

PEER_FLAGS = ("serve", "--continuous-batching", "--dtype", "float32", "--device", "cpu", "--log-level", "warning")
"""How the peer runs: the model in fp32 on the CPU, as the lab runs it there (lab.core.device)."""


def peer_model_dir(data_dir: Path | None = None) -> str:
    """The folder the lab serves (the embedded model materialised in the data directory, or LAB_MODEL), so both
    sides load the same weights and chat template."""
    from lab.inference.models import resolve_model_path
    settings = LabSettings(data_dir=data_dir) if data_dir is not None else LabSettings()
    return resolve_model_path(settings.model_id, settings.subdir("models"))


@contextmanager
def running_peer(cfg: ServeBenchConfig, model_dir: str) -> Iterator[App]:
    """`transformers serve` pinned to `model_dir` on a free loopback port; App.url is its OpenAI API root."""
    import httpx
    port = _free_port()
    command = [str(Path(sys.executable).with_name("transformers")), *PEER_FLAGS, "--host", "127.0.0.1",
               "--port", str(port), model_dir]
    env = os.environ | {"HF_HUB_OFFLINE": "1"}  # the model is a local folder; nothing to fetch
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        peer = App(f"http://127.0.0.1:{port}/v1", server.pid, log)
        try:
            deadline = time.time() + cfg.startup_timeout_s
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"transformers serve did not start on port {port} (exit code "
                                       f"{server.poll()}):\n{peer.log_tail()}")
                time.sleep(1)
            yield peer
        finally:
            end_group(server)


def ask_peer(client, cfg: ServeBenchConfig, model: str, prompt: str) -> tuple[str, int]:
    """One greedy streamed chat completion: (answer, new tokens). The server is pinned to one model and refuses
    any other name, so `model` is the folder it was started with."""
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=cfg.new_tokens, temperature=0.0, stream=True)
    text, usage, finish = "", None, None
    try:
        for chunk in stream:
            usage = chunk.usage or usage  # on the last chunk
            for choice in chunk.choices:
                text += (choice.delta.content or "") if choice.delta else ""
                finish = choice.finish_reason or finish
    finally:
        stream.close()
    if usage is None:
        raise RuntimeError(f"the peer's stream ended without a usage block (finish reason {finish!r})")
    # The peer counts the end-of-sequence token of an answer that stopped by itself; the lab does not.
    return text, usage.completion_tokens - (finish == "stop")


def bench_peer(cfg: ServeBenchConfig, data_dir: Path | None = None) -> dict:
    """The chat workload on the lab's app, then, once the app has ended (the two never share the CPU), on the peer;
    the lab's result with the peer's beside it (versus_peer)."""
    from gradio_client import Client
    load_before = round(os.getloadavg()[0], 2)
    with running_app(cfg, data_dir) as app:
        lab, lab_answers = _bench_workload(app, Client(app.url, verbose=False), cfg,
                                           os.environ.get("LAB_MODEL") or "embedded")
    peer, peer_answers = measure_peer(cfg, peer_model_dir(data_dir))
    # Both servers inherit this environment. OMP_WAIT_POLICY decides whether idle OpenMP threads spin or sleep,
    # which on a busy CPU changes a process's speed several times over (see the module docstring).
    from lab.inference.models import FORWARD_THREAD_ENV
    return {"load_1min_before": load_before, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            "lab_forward_thread": os.environ.get(FORWARD_THREAD_ENV) != "0",
            **versus_peer(lab, peer, lab_answers, peer_answers), "load_1min_after_peer": round(os.getloadavg()[0], 2)}


def measure_peer(cfg: ServeBenchConfig, model_dir: str) -> tuple[dict, dict[int, str]]:
    """The chat workload against the peer, as lab.bench.serve measures the lab: (the peer_* results, each
    prompt's answer alone)."""
    import openai

    def connect():
        return openai.OpenAI(base_url=peer.url, api_key="none", max_retries=0, timeout=cfg.request_timeout_s)

    def ask(client, key: int) -> tuple[str, int]:
        return ask_peer(client, cfg, model_dir, CHAT_PROMPTS[key])

    with running_peer(cfg, model_dir) as peer:
        client = connect()
        # The first request creates the peer's batching manager with that request's settings: greedy, like all.
        warm_up(peer, lambda: ask(client, 0))
        keys = plan(cfg)
        alone = run_phase([client], [sorted({k for mine in keys for k in mine})], ask, cfg.request_timeout_s)
        clients = [connect() for _ in range(cfg.clients)]  # connected before the clock starts, as on the lab side
        many = run_phase(clients, keys, ask, cfg.request_timeout_s)
        rss_mb = _rss_mb(peer.pid)
    answers = {r.key: r.answer for r in alone.replies}
    return peer_result(alone, many, rss_mb), answers


def peer_result(alone: Phase, many: Phase, rss_mb: float) -> dict:
    equal, _ = greedy_check({r.key: r.answer for r in alone.replies}, many.replies)
    lat = [r.latency_s for r in many.replies]
    errors = many.errors + alone.errors
    return {"peer_throughput_rps": round(many.rps, 4), "peer_single_rps": round(alone.rps, 4),
            "peer_tokens_per_s": round(many.tokens_per_s, 2), "peer_single_tokens_per_s": round(alone.tokens_per_s, 2),
            "peer_latency_p50_s": round(statistics.median(lat), 3) if lat else None,
            "peer_latency_p95_s": percentile(lat, 0.95), "peer_greedy_equal": equal, "peer_errors": len(errors),
            "peer_rss_mb": round(rss_mb, 1), "peer_error_samples": errors[:3]}


def versus_peer(lab: dict, peer: dict, lab_answers: dict[int, str], peer_answers: dict[int, str]) -> dict:
    """The lab's result with the peer's beside it: vs_peer (N clients) and vs_peer_single (one client) are the lab's
    req/s over the peer's (above 1: the lab is faster), errors counts both sides, and answers_equal_peer the prompts
    whose greedy answer alone is the same text on both (the same computation, so the ratios compare like with like)."""
    def ratio(ours: float | None, theirs: float | None) -> float | None:
        return round(ours / theirs, 3) if ours and theirs else None

    return {**lab, **peer, "vs_peer": ratio(lab["throughput_rps"], peer["peer_throughput_rps"]),
            "vs_peer_single": ratio(lab["single_client_rps"], peer["peer_single_rps"]),
            "errors": lab["errors"] + peer["peer_errors"],
            "answers_equal_peer": sum(1 for k, text in lab_answers.items() if peer_answers.get(k) == text),
            "answers_compared_peer": len(lab_answers.keys() & peer_answers.keys())}
