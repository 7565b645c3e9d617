"""The serving load test: its config checks, how it reads the app's answers, and real runs against the app.

    .venv/bin/python -m pytest -q tests/bench/test_bench_serve.py -m "not slow"   # the fast half
"""

from __future__ import annotations

import argparse

import pytest

from lab.bench.serve import (
    ARENA_TOKENS,
    CARD_TEXT,
    CHAT_PROMPTS,
    PLAYGROUND_TOKENS,
    Reply,
    ServeBenchConfig,
    _message_text,
    _tokens,
    bench_serve,
    greedy_check,
    plan,
)
from lab.cli.flags import add_flags

WORKLOAD_KEYS = {"clients": int, "requests": int, "errors": int, "throughput_ratio": float,
                 "tokens_per_s_ratio": float, "latency_p50_s": float, "latency_p95_s": float, "rss_before_mb": float,
                 "rss_after_mb": float, "models_loaded": int, "greedy_equal": bool, "greedy_compared": int,
                 "throughput_rps": float, "single_client_rps": float, "rss_growth_pct": float,
                 "model_load_counts": dict, "error_samples": list, "workload": str, "max_new_tokens": int}


@pytest.mark.parametrize("field, value", [("clients", 0), ("clients", 65), ("requests_per_client", 1000),
                                          ("workload", "batch"), ("max_new_tokens", 0), ("max_new_tokens", 5000),
                                          ("arena", 1), ("arena", 5), ("request_timeout_s", 0),
                                          ("startup_timeout_s", -1)])
def test_bad_config_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ServeBenchConfig(**{field: value})


def test_cli_flags_build_the_config_and_refuse_bad_values():
    parser = argparse.ArgumentParser()
    build = add_flags(parser, ServeBenchConfig, rename={"requests_per_client": "requests"})
    cfg = build(parser.parse_args(["--workload", "chat", "--clients", "3", "--requests", "2"]))
    assert (cfg.workload, cfg.clients, cfg.requests_per_client, cfg.new_tokens) == ("chat", 3, 2, 64)
    assert build(parser.parse_args([])).new_tokens == 12  # mixed keeps its short answers
    assert build(parser.parse_args(["--arena", "4"])).new_tokens == 64
    with pytest.raises(ValueError, match="arena"):
        build(parser.parse_args(["--arena", "7"]))
    with pytest.raises(SystemExit):  # argparse names the flag and its choices
        parser.parse_args(["--workload", "batch"])


def test_plan_asks_every_distinct_request_equally_often():
    keys = plan(ServeBenchConfig(clients=8, requests_per_client=2, workload="chat"))
    flat = [k for mine in keys for k in mine]
    assert len(keys) == 8 and all(len(mine) == 2 for mine in keys)
    assert sorted(flat) == sorted(list(range(len(CHAT_PROMPTS))) * 2)
    assert [k for mine in plan(ServeBenchConfig(clients=4, requests_per_client=1)) for k in mine] == [0, 1, 0, 1]


def test_greedy_check_compares_each_answer_with_its_request_alone():
    alone = {0: "Paris is the capital.", 1: "Blue light scatters."}
    same = [Reply(0, "Paris is the capital.", 5, 1.0), Reply(1, "Blue light scatters.", 4, 1.0)]
    assert greedy_check(alone, same) == (True, [])
    equal, mismatches = greedy_check(alone, [*same, Reply(1, "Blue light scatter", 4, 1.0)])
    assert equal is False and mismatches == [{"request": 1, "alone": "Blue light scatters.",
                                              "concurrent": "Blue light scatter"}]
    assert greedy_check(alone, [Reply(2, "never asked alone", 3, 1.0)])[0] is False
    assert greedy_check(alone, []) == (None, [])


def test_the_bench_reads_what_the_tabs_render():
    """Token counts and answers are parsed from the tabs' own formatting functions, so a format change fails here."""
    from types import SimpleNamespace

    from lab.inference.generate import Timings
    from tabs.arena import _timings
    from tabs.compare import render_cards
    from tabs.system import timings_markdown
    t = Timings(prompt_tokens=40, context_tokens=40, new_tokens=17, ttft_s=0.2, decode_tokens_per_s=30.0, total_s=0.8)
    assert _tokens(PLAYGROUND_TOKENS, timings_markdown(t)) == 17
    assert _tokens(ARENA_TOKENS, _timings(SimpleNamespace(error=None, timings=t, done=True))) == 17
    with pytest.raises(RuntimeError, match="token count"):
        _tokens(PLAYGROUND_TOKENS, "no numbers here")
    card = SimpleNamespace(error=None, metrics={"ttft_s": 0.2}, chunks=[], answer="Chunks", done=True,
                           text="It retrieves <chunks> & scores them.")
    assert [t for t in CARD_TEXT.findall(render_cards({"rag": card}))] == ["It retrieves &lt;chunks&gt; &amp; scores them."]
    assert _message_text({"role": "assistant", "content": "hi"}) == "hi"
    assert _message_text({"role": "assistant", "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]}) == "hi"


@pytest.mark.slow
def test_chat_workload_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MODEL", str(tiny_model_dir))
    result = bench_serve(ServeBenchConfig(clients=2, requests_per_client=1, workload="chat", max_new_tokens=4),
                         data_dir=tmp_path / "data")
    assert result["errors"] == 0, result["error_samples"]
    for key, kind in WORKLOAD_KEYS.items():
        assert isinstance(result[key], kind), (key, result[key])
    assert (result["workload"], result["clients"], result["requests"], result["max_new_tokens"]) == ("chat", 2, 2, 4)
    # Every concurrent answer was compared with the same prompt's answer alone, from the app's real output.
    assert result["greedy_equal"] is True and result["greedy_compared"] == 2
    assert len(result["answer_samples"]) == 2 and all(a.strip() for a in result["answer_samples"])
    assert result["models_loaded"] == 1 and set(result["model_load_counts"].values()) == {1}
    assert result["latency_p95_s"] >= result["latency_p50_s"] > 0


@pytest.mark.slow
def test_arena_measure_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_MODEL", str(tiny_model_dir))
    result = bench_serve(ServeBenchConfig(arena=2, max_new_tokens=4), data_dir=tmp_path / "data")
    assert result["errors"] == 0, result["error_samples"]
    assert (result["workload"], result["arena_columns"], len(result["column_alone_s"])) == ("arena", 2, 2)
    for key in ("arena_s", "slowest_column_alone_s", "arena_ratio", "rss_before_mb", "rss_after_mb"):
        assert isinstance(result[key], float) and result[key] > 0, (key, result[key])
    assert result["slowest_column_alone_s"] == max(result["column_alone_s"])
    assert result["columns_alone_sum_s"] == pytest.approx(sum(result["column_alone_s"]), abs=0.01)
    assert len(result["arena_tokens"]) == 2 and result["greedy_equal"] is True and result["models_loaded"] == 1


@pytest.mark.slow
def test_four_clients_share_one_model_without_errors():
    """The default Compare/Arena mix on the embedded model."""
    result = bench_serve(ServeBenchConfig(clients=4, requests_per_client=1, max_new_tokens=8))
    assert result["errors"] == 0, result["error_samples"]
    assert result["requests"] == 4 and result["clients"] == 4 and result["workload"] == "mixed"
    assert result["models_loaded"] == 1 and set(result["model_load_counts"].values()) == {1}
    assert result["latency_p50_s"] > 0 and result["rss_before_mb"] > 0
    assert result["greedy_equal"] is True and result["greedy_compared"] == 4
