"""An adapter column beside base columns: how much of their speed do the base columns keep?

    python -m lab bench serve --arena 3 --adapter NAME --json

Through the running app, in one run: an Arena round of N-1 greedy base columns alone, then the same round with an
Nth column on the LoRA adapter NAME (a folder in <data>/adapters). Prints the base columns' tokens per second of
the round's wall time both ways and `adapter_mix_ratio` (with the adapter ÷ alone; target at least 0.5), and
their decode tokens/s as the columns report it (which leaves out a wait before a column's first token). An
adapter request decodes alone on the model while the batch pauses (lab/inference/batching.py says why), so the
base columns stand still while it decodes: the ratio shows what that costs.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from pathlib import Path

from lab.bench.serve import ARENA_PROMPT, ARENA_TOKENS, ServeBenchConfig, ask_playground, running_app, warm_up
from lab.inference.arena import ADAPTER_SEP, MAX_COLUMNS

RATE = re.compile(r"\*\*([\d.,]+) tok/s\*\*")  # tabs/arena.py _timings


def _round(client, cfg: ServeBenchConfig, choices: list[str]) -> tuple[list[float], list[int], float]:
    """One Arena request: each column's decode tokens/s and new tokens from its last note, and the wall time."""
    padded = [*choices, *[choices[0]] * (MAX_COLUMNS - len(choices))]
    args = [value for choice in padded for value in (choice, 0.0, cfg.new_tokens)]
    start = time.perf_counter()
    out = client.submit(ARENA_PROMPT, len(choices), False, *args, api_name="/arena").result(
        timeout=cfg.request_timeout_s)
    wall_s = time.perf_counter() - start
    notes = out[MAX_COLUMNS:MAX_COLUMNS + len(choices)]
    rates, tokens = [], []
    for i, note in enumerate(notes):
        found = RATE.search(note or "")
        if not found:
            raise RuntimeError(f"arena column {i + 1} reported no speed: {note!r}")
        rates.append(float(found.group(1).replace(",", "")))
        tokens.append(int(ARENA_TOKENS.search(note).group(1)))
    return rates, tokens, wall_s


def bench_adapter_mix(cfg: ServeBenchConfig, data_dir: Path | None = None) -> dict:
    from gradio_client import Client
    with running_app(cfg, data_dir) as app:
        return _measure(app, Client(app.url, verbose=False), cfg, os.environ.get("LAB_MODEL") or "embedded")


def _measure(app, client, cfg: ServeBenchConfig, model_id: str) -> dict:
    base = [model_id] * (cfg.arena - 1)
    with_adapter = [*base, f"{model_id}{ADAPTER_SEP}{cfg.adapter}"]
    warm_up(app, lambda: (ask_playground(client, cfg, model_id, ARENA_PROMPT), _round(client, cfg, with_adapter)))
    alone = [_round(client, cfg, base) for _ in range(2)]
    mixed = [_round(client, cfg, with_adapter) for _ in range(2)]

    def wall_rate(rounds: list, n: int) -> float:  # base columns' tokens per second of the round's wall time
        return statistics.median(sum(tokens[:n]) / wall for _, tokens, wall in rounds)

    def decode_rate(rounds: list, n: int) -> float:
        return statistics.median(statistics.mean(rates[:n]) for rates, _, _ in rounds)

    n = len(base)
    return {"load_1min": round(os.getloadavg()[0], 2), "workload": "arena+adapter", "arena_columns": cfg.arena,
            "adapter": cfg.adapter, "new_tokens": cfg.new_tokens,
            "base_tokens_per_s_alone": round(wall_rate(alone, n), 2),
            "base_tokens_per_s_with_adapter": round(wall_rate(mixed, n), 2),
            "adapter_mix_ratio": round(wall_rate(mixed, n) / wall_rate(alone, n), 2),
            "base_decode_tokens_per_s_alone": round(decode_rate(alone, n), 2),
            "base_decode_tokens_per_s_with_adapter": round(decode_rate(mixed, n), 2),
            "adapter_decode_tokens_per_s": round(statistics.median(rates[-1] for rates, _, _ in mixed), 2)}
