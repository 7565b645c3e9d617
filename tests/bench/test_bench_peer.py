"""The lab against `transformers serve --continuous-batching`: its flags, its arithmetic, how it reads the peer's
stream, and one small real run of both servers.

    .venv/bin/python -m pytest -q tests/bench/test_bench_peer.py -m "not slow"   # the fast half
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from lab.bench.peer import ask_peer, bench_peer, peer_result, versus_peer
from lab.bench.serve import Phase, Reply, ServeBenchConfig
from lab.cli.flags import add_flags

PEER_KEYS = {"peer_throughput_rps": float, "peer_single_rps": float, "vs_peer": float, "vs_peer_single": float,
             "greedy_equal": bool, "peer_greedy_equal": bool, "errors": int, "peer_errors": int,
             "models_loaded": int, "peer_rss_mb": float, "answers_equal_peer": int, "answers_compared_peer": int,
             "omp_wait_policy": str}


def test_peer_flag_means_the_chat_workload_and_refuses_the_others():
    parser = argparse.ArgumentParser()
    build = add_flags(parser, ServeBenchConfig, rename={"requests_per_client": "requests"})
    cfg = build(parser.parse_args(["--peer"]))
    assert (cfg.peer, cfg.workload, cfg.new_tokens, cfg.clients, cfg.requests_per_client) == (True, "chat", 64, 8, 2)
    assert build(parser.parse_args([])).workload == "mixed"  # without --peer the default is unchanged
    for flags in (["--peer", "--workload", "mixed"], ["--peer", "--arena", "2"]):
        with pytest.raises(ValueError, match="^peer compares the chat workload only"):
            build(parser.parse_args(flags))


def phase(replies: list[tuple[int, str, int]], wall_s: float, errors: tuple[str, ...] = ()) -> Phase:
    return Phase([Reply(key, text, tokens, wall_s / 2) for key, text, tokens in replies], list(errors), wall_s)


def test_versus_peer_divides_the_lab_by_the_peer_and_counts_both_sides():
    alone = phase([(0, "Paris.", 2), (1, "Blue.", 2)], wall_s=4.0)
    many = phase([(0, "Paris.", 2), (1, "Blue.", 2), (0, "Paris.", 2), (1, "Blue!", 2)], wall_s=2.0,
                 errors=("APITimeoutError: timed out",))
    peer = peer_result(alone, many, rss_mb=512.04)
    assert peer["peer_single_rps"] == 0.5 and peer["peer_throughput_rps"] == 2.0
    assert peer["peer_single_tokens_per_s"] == 1.0 and peer["peer_tokens_per_s"] == 4.0
    assert peer["peer_greedy_equal"] is False and peer["peer_errors"] == 1 and peer["peer_rss_mb"] == 512.0
    lab = {"throughput_rps": 3.0, "single_client_rps": 0.4, "errors": 2, "greedy_equal": True, "models_loaded": 1}
    result = versus_peer(lab, peer, {0: "Paris.", 1: "Blue."}, {0: "Paris.", 1: "Blue!"})
    assert (result["vs_peer"], result["vs_peer_single"]) == (1.5, 0.8)  # above 1: the lab is faster
    assert result["errors"] == 3 and result["peer_errors"] == 1  # errors counts both sides
    assert (result["answers_equal_peer"], result["answers_compared_peer"]) == (1, 2)
    assert result["greedy_equal"] is True and result["models_loaded"] == 1  # the lab's own keys stay
    nothing = peer_result(phase([], 1.0, ("timed out",)), phase([], 1.0), rss_mb=1.0)
    assert versus_peer(lab, nothing, {}, {})["vs_peer"] is None  # no division by a peer that answered nothing


def chunk(content: str | None = None, finish: str | None = None, completion_tokens: int | None = None):
    usage = SimpleNamespace(completion_tokens=completion_tokens) if completion_tokens is not None else None
    return SimpleNamespace(usage=usage, choices=[SimpleNamespace(delta=SimpleNamespace(content=content),
                                                                 finish_reason=finish)])


class FakeStream(list):
    closed = False

    def close(self):
        self.closed = True


def fake_client(chunks: list) -> tuple[SimpleNamespace, dict, FakeStream]:
    asked, stream = {}, FakeStream(chunks)

    def create(**kwargs):
        asked.update(kwargs)
        return stream

    return SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create))), asked, stream


def test_ask_peer_joins_the_pieces_and_counts_tokens_as_the_lab_does():
    cfg = ServeBenchConfig(peer=True, max_new_tokens=8)
    client, asked, stream = fake_client([chunk(""), chunk("Par"), chunk("is."), chunk(None, "stop", 3)])
    assert ask_peer(client, cfg, "/models/m", "Capital of France?") == ("Paris.", 2)  # its count has the end token
    assert stream.closed
    assert asked == {"model": "/models/m", "messages": [{"role": "user", "content": "Capital of France?"}],
                     "max_tokens": 8, "temperature": 0.0, "stream": True}
    client, _, _ = fake_client([chunk("a b"), chunk(None, "length", 8)])
    assert ask_peer(client, cfg, "/models/m", "q") == ("a b", 8)  # cut at max_tokens: no end token to take off
    client, _, _ = fake_client([chunk("a")])
    with pytest.raises(RuntimeError, match="without a usage block"):
        ask_peer(client, cfg, "/models/m", "q")


def test_the_cli_runs_the_peer_comparison(monkeypatch, capsys):
    import json

    import lab.bench.peer
    from lab.cli import main
    asked = []  # the handler imports bench_peer when it runs, so the module's attribute is what it finds
    monkeypatch.setattr(lab.bench.peer, "bench_peer", lambda cfg: asked.append(cfg) or {"vs_peer": 1.25})
    assert main(["bench", "serve", "--peer", "--clients", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"vs_peer": 1.25}
    assert asked == [ServeBenchConfig(clients=3, workload="chat", peer=True)]


@pytest.mark.slow
def test_lab_and_peer_on_the_embedded_model():
    """Both servers, 2 clients x 1 request and each prompt alone, 8 greedy tokens (about 2 minutes)."""
    result = bench_peer(ServeBenchConfig(peer=True, clients=2, requests_per_client=1, max_new_tokens=8))
    assert result["errors"] == 0, (result["error_samples"], result["peer_error_samples"])
    for key, kind in PEER_KEYS.items():
        assert isinstance(result[key], kind), (key, result[key])
    assert result["vs_peer"] > 0 and result["vs_peer_single"] > 0
    assert result["greedy_equal"] is True and result["peer_greedy_equal"] is True and result["models_loaded"] == 1
    # Both sides answer the same prompts with the same weights and template: greedy, they write the same text.
    assert result["answers_compared_peer"] == 2 and result["answers_equal_peer"] == 2
