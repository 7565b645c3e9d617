"""Load test: N concurrent browser-like clients asking Compare and Arena questions of one app.

    python -m lab bench serve --clients 8 --json

Starts the real app as a subprocess on a free loopback port, warms it up (model loaded, RAG
index built), measures one client alone, then N clients at once, each through its own
`gradio_client` session, and prints one JSON object. Every request goes to 127.0.0.1 only,
and the run is bounded in requests and time. The server process is ended by its pid.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from lab.core.settings import REPO_ROOT


@dataclass(frozen=True)
class ServeBenchConfig:
    clients: int = 8
    """Concurrent client sessions."""
    requests_per_client: int = 2
    """Requests each client makes, alternating Compare (rag + base) and Arena (2 columns)."""
    max_new_tokens: int = 12
    """Short answers keep the run about serving, not decoding."""
    startup_timeout_s: float = 300.0
    """How long to wait for the app to come up (first start converts the embedded model)."""
    request_timeout_s: float = 600.0
    """Upper bound on any single request, so the run always ends."""

    def __post_init__(self) -> None:
        if not 1 <= self.clients <= 64:
            raise ValueError(f"clients must be between 1 and 64, got {self.clients}")
        if not 1 <= self.requests_per_client <= 50:
            raise ValueError(f"requests_per_client must be between 1 and 50, got {self.requests_per_client}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def _request(client, index: int, cfg: ServeBenchConfig, model_id: str) -> None:
    if index % 2 == 0:
        client.predict("What does RAG retrieve before answering?", ["rag", "base"], 500, 50, 3, cfg.max_new_tokens,
                       True, False, api_name="/compare")
    else:
        column = [model_id, 0.0, cfg.max_new_tokens]
        client.predict("Name one benefit of LoRA.", 2, False, *column, *column, *column, *column, api_name="/arena")


def _client_run(url: str, cfg: ServeBenchConfig, model_id: str, offset: int, latencies: list, errors: list) -> None:
    from gradio_client import Client
    try:
        client = Client(url, verbose=False)
    except Exception as exc:  # a client that cannot even connect counts its requests as errors
        errors.extend([repr(exc)] * cfg.requests_per_client)
        return
    for i in range(cfg.requests_per_client):
        start = time.perf_counter()
        try:
            _request(client, offset + i, cfg, model_id)
            latencies.append(time.perf_counter() - start)
        except Exception as exc:
            errors.append(repr(exc))


def _run_clients(url: str, cfg: ServeBenchConfig, n: int, model_id: str) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    threads = [threading.Thread(target=_client_run, args=(url, cfg, model_id, i, latencies, errors), daemon=True)
               for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(cfg.request_timeout_s * cfg.requests_per_client)
    return latencies, errors, time.perf_counter() - start


def bench_serve(cfg: ServeBenchConfig, data_dir: Path | None = None) -> dict:
    """Run the load test and return the JSON-ready result."""
    from gradio_client import Client
    port = _free_port()
    env = os.environ | {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "LAB_AUTH": ""}
    if data_dir is not None:
        env["LAB_DATA_DIR"] = str(data_dir)
    server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + cfg.startup_timeout_s
        while True:
            try:
                client = Client(url, verbose=False)
                break
            except Exception:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the app did not start on {url} (exit code {server.poll()})") from None
                time.sleep(1)
        model_id = env.get("LAB_MODEL") or "embedded"
        for i in range(2):  # warm-up: loads the model, builds the RAG index, fills caches
            _request(client, i, cfg, model_id)
        rss_before = _rss_mb(server.pid)
        single_lat, single_err, single_s = _run_clients(url, cfg, 1, model_id)
        lat, errors, wall_s = _run_clients(url, cfg, cfg.clients, model_id)
        rss_after = _rss_mb(server.pid)
        stats = client.predict(api_name="/system_stats")
        lat_sorted = sorted(lat)

        def pct(q: float) -> float | None:
            return round(lat_sorted[min(len(lat_sorted) - 1, int(q * len(lat_sorted)))], 3) if lat_sorted else None

        requests = cfg.clients * cfg.requests_per_client
        return {"clients": cfg.clients, "requests": requests, "errors": len(errors) + len(single_err),
                "latency_p50_s": round(statistics.median(lat), 3) if lat else None, "latency_p95_s": pct(0.95),
                "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
                "rss_growth_pct": round(100 * (rss_after - rss_before) / rss_before, 2),
                "models_loaded": sum(1 for e in stats["entries"] if e["kind"] == "model"),
                "model_load_counts": stats["load_counts"],
                "throughput_rps": round(len(lat) / wall_s, 4), "single_client_rps": round(len(single_lat) / single_s, 4),
                "error_samples": (errors + single_err)[:3]}
    finally:
        try:
            os.killpg(server.pid, 15)
        except ProcessLookupError:
            pass
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
