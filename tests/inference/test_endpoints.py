"""Remote endpoints: LAB_ENDPOINTS parsing, request bodies, and a REAL OpenAI-compatible server.

    .venv/bin/python -m pytest -q tests/inference/test_endpoints.py            # -m "not slow" skips the server

The `slow` tests start `transformers serve` (transformers 5.23, needs the openai package) with the
embedded SmolLM2 on CPU on a free loopback port, talk to it through Runtime.generate, Compare and
the Arena exactly as the app does, and stop it by its pid at the end. No timings are asserted.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lab.cli import main as lab_main
from lab.core.errors import USER_ERRORS, EndpointError
from lab.core.settings import LabSettings, parse_endpoints
from lab.inference.arena import ArenaColumn, stream_arena
from lab.inference.endpoints import Endpoint, cache_salt, request_body
from lab.inference.generate import GenerationSettings
from lab.knowledge.compare import CAG_ON_ENDPOINT, CompareConfig, ask

QUESTION = "What does CAG stand for?"
PROMPT = "Name three colours of the rainbow."
GOOD = {"name": "gpu", "base_url": "http://gpu-box:8000/v1", "model": "Qwen/Qwen2.5-7B-Instruct"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_with(tmp_path: Path, *entries: dict):
    from lab.core.device import choose_device
    from lab.engine import Engine
    settings = LabSettings(data_dir=tmp_path / "data", model_id="embedded", memory_budget_gb=4.0, load_in_4bit=False,
                           auth="", endpoints=list(entries))
    return Engine(settings, device=choose_device(has_cuda=False, has_flash_attn=False))


# ---- LAB_ENDPOINTS and request bodies (no server) ------------------------------------------------

def test_endpoints_parse_from_yaml_file_inline_json_and_a_list(tmp_path):
    path = tmp_path / "endpoints.yaml"
    path.write_text("endpoints:\n  - name: gpu\n    base_url: http://gpu-box:8000/v1/\n"
                    "    model: Qwen/Qwen2.5-7B-Instruct\n    kind: vllm\n    api_key_env: VLLM_API_KEY\n")
    [entry] = parse_endpoints(str(path))
    assert entry == {**GOOD, "api_key_env": "VLLM_API_KEY", "kind": "vllm", "timeout_s": 60.0}  # trailing / dropped
    assert parse_endpoints(json.dumps([GOOD]))[0]["kind"] == "openai"
    assert parse_endpoints("") == () and parse_endpoints([]) == ()
    assert LabSettings(endpoints=[GOOD, {**GOOD, "name": "gpu-2"}]).endpoints[1]["name"] == "gpu-2"


@pytest.mark.parametrize("entries, words", [
    ([{**GOOD, "api_key": "sk-123"}], ["entry 1 ('gpu')", "API key", "api_key_env"]),
    ([GOOD, {**GOOD, "name": "b", "base_url": "gpu-box:8000"}], ["entry 2 ('b')", "base_url", "http://"]),
    ([GOOD, GOOD], ["entry 2", "used twice"]),
    ([{"name": "x", "base_url": "http://h/v1"}], ["entry 1 ('x')", "model"]),
    ([{**GOOD, "kind": "tgi"}], ["kind", "openai, vllm"]),
    ([{**GOOD, "timeout_s": 0}], ["timeout_s"]),
    ([{**GOOD, "modle": "x"}], ["unknown keys ['modle']"]),
    ([{**GOOD, "api_key_env": "my key"}], ["api_key_env", "environment variable"]),
    (["gpu"], ["entry 1", "mapping"]),
])
def test_a_bad_entry_is_named(entries, words):
    with pytest.raises(ValueError) as err:
        LabSettings(endpoints=entries)
    for word in words:
        assert word in str(err.value)


def test_bad_lab_endpoints_text_is_explained(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="does not exist"):
        parse_endpoints(str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_endpoints("[{'name': 1}")
    with pytest.raises(ValueError, match="must be a list"):
        parse_endpoints('{"name": "gpu"}')
    # The command line reads LAB_ENDPOINTS on start and names the bad entry instead of a traceback.
    monkeypatch.setenv("LAB_ENDPOINTS", json.dumps([{**GOOD, "base_url": "ftp://x"}]))
    assert lab_main(["generate", "--prompt", "hi", "--model", "endpoint:gpu"]) == 2
    assert "LAB_ENDPOINTS (inline JSON) entry 1 ('gpu')" in capsys.readouterr().err


def test_request_body_per_kind_and_user():
    sampled = GenerationSettings(max_new_tokens=16, temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.2, seed=7)
    vllm = Endpoint(**{**GOOD, "kind": "vllm"})
    body = request_body(vllm, [{"role": "user", "content": "hi"}], sampled, user="alice")
    assert body["max_tokens"] == 16 and body["temperature"] == 0.7 and body["top_p"] == 0.9 and body["seed"] == 7
    assert body["stream"] and body["stream_options"] == {"include_usage": True}
    assert body["extra_body"] == {"top_k": 40, "repetition_penalty": 1.2, "cache_salt": cache_salt("alice")}
    assert cache_salt("alice") != cache_salt("bob") and "alice" not in cache_salt("alice")
    # A plain OpenAI-compatible server gets only the OpenAI fields (transformers serve refuses unknown ones).
    plain = request_body(Endpoint(**GOOD), [], sampled, user="alice")
    assert "extra_body" not in plain and plain["seed"] == 7
    greedy = request_body(vllm, [], GenerationSettings(top_k=0), model="my-lora")
    assert greedy["model"] == "my-lora" and greedy["temperature"] == 0.0 and "top_p" not in greedy
    assert greedy["extra_body"] == {"repetition_penalty": 1.0}  # greedy: no top_k; no user: no salt
    unlimited = request_body(vllm, [], GenerationSettings(temperature=1.0, top_k=0))
    assert unlimited["top_p"] == 1.0 and unlimited["extra_body"]["top_k"] == -1


def test_unknown_endpoint_names_and_missing_keys_are_explained(tmp_path, monkeypatch):
    engine = engine_with(tmp_path, GOOD)
    assert engine.models.endpoint_models() == ["endpoint:gpu"]
    assert "endpoint:gpu" in engine.arena.choices() and "endpoint:gpu" in engine.models.playground_models()
    with pytest.raises(EndpointError, match=r"no endpoint 'nope' in LAB_ENDPOINTS.*endpoint:gpu"):
        list(engine.models.generate("hi", model_id="endpoint:nope"))
    with pytest.raises(EndpointError, match="LAB_ENDPOINTS is not set"):
        list(engine_with(tmp_path).models.generate("hi", model_id="endpoint:gpu"))
    monkeypatch.delenv("LAB_TEST_KEY", raising=False)
    keyed = engine_with(tmp_path, {**GOOD, "api_key_env": "LAB_TEST_KEY"})
    with pytest.raises(EndpointError, match="LAB_TEST_KEY, which is not set"):
        list(keyed.models.generate("hi", model_id="endpoint:gpu"))
    assert issubclass(EndpointError, USER_ERRORS)


# ---- against a real server ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`transformers serve` with the embedded SmolLM2 on CPU on a free loopback port: (base_url, served name)."""
    from lab.inference.models import materialise_embedded
    model = str(materialise_embedded(LabSettings().subdir("models")))
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cli = Path(sys.executable).with_name("transformers")
    command = [str(cli), "serve", "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), model]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve did not start in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", model
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # only the server this fixture started, by its pid
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def remote(server, tmp_path_factory):
    """An engine whose LAB_ENDPOINTS lists the server as 'local' (kind openai: transformers serve takes no vLLM fields)."""
    base_url, model = server
    return engine_with(tmp_path_factory.mktemp("remote"), {"name": "local", "base_url": base_url, "model": model,
                                                           "timeout_s": 300})


@pytest.mark.slow
def test_generate_streams_an_answer_with_timings(remote):
    events = list(remote.models.generate(PROMPT, GenerationSettings(max_new_tokens=24), model_id="endpoint:local"))
    *pieces, final = events
    assert pieces and not any(e.done for e in pieces) and final.done
    assert final.text == "".join(e.delta for e in pieces) and final.text.strip()
    assert final.finish_reason in ("eos", "length")
    t = final.timings
    assert t.prompt_tokens > 0 and t.context_tokens == t.prompt_tokens  # from the server's usage block
    assert t.new_tokens >= len(pieces) and t.ttft_s > 0 and t.total_s >= t.ttft_s
    assert pieces[0].timings.prompt_tokens is None  # unknown until the usage block arrives at the end


@pytest.mark.slow
def test_greedy_answer_matches_the_local_model(remote, embedded_engine):
    """Both sides render SmolLM2's own chat template, run the same fp32 weights on CPU and decode greedily,
    so the text is the same (checked here on two prompts)."""
    settings = GenerationSettings(max_new_tokens=24)
    for prompt in (PROMPT, "What is the capital of France?"):
        local = list(embedded_engine.models.generate(prompt, settings))[-1]
        served = list(remote.models.generate(prompt, settings, model_id="endpoint:local"))[-1]
        assert served.text == local.text
        assert served.timings.prompt_tokens == local.timings.prompt_tokens


@pytest.mark.slow
def test_compare_base_rag_full_and_cag_against_the_endpoint(remote, server):
    from transformers import AutoTokenizer

    from lab.knowledge.prompt import split_prompt
    doc = remote.knowledge.bundled_document()
    cfg = CompareConfig(max_new_tokens=16, model_id="endpoint:local")
    rows = {u.method: u for u in ask(remote.runtime, doc, QUESTION, "base,rag,full,cag", cfg)}
    assert list(rows) == ["base", "rag", "full", "cag"]
    for row in rows.values():
        assert row.done and row.error is None and row.text, (row.method, row.error)
        assert row.metrics["context_tokens"] > 0 and row.metrics["cache_mb"] is None
    assert rows["rag"].chunks and rows["rag"].metrics["retrieval_ms"] > 0
    assert rows["cag"].metrics["note"] == CAG_ON_ENDPOINT
    # The server saw the same prompt the local methods build: its token count matches the local split prompt.
    tok = AutoTokenizer.from_pretrained(server[1])
    assert rows["base"].metrics["context_tokens"] == split_prompt(tok, QUESTION).ids.shape[1]
    assert rows["full"].metrics["context_tokens"] == split_prompt(tok, QUESTION, doc.text).ids.shape[1]
    assert rows["cag"].metrics["context_tokens"] == rows["full"].metrics["context_tokens"]
    assert not [e for e in remote.devices.stats()["entries"] if e["kind"] == "model"]  # no local model was loaded


@pytest.mark.slow
def test_arena_column_on_the_endpoint(remote):
    columns = [ArenaColumn("endpoint:local", GenerationSettings(max_new_tokens=8))]
    *streamed, final = list(stream_arena(remote.runtime, "Say hello.", columns))
    assert streamed and final.done and final.error is None and final.text and final.timings.new_tokens > 0


@pytest.mark.slow
def test_errors_name_the_endpoint_and_the_app_keeps_serving(remote, server, tmp_path):
    base_url, model = server
    silent = socket.socket()  # accepts connections in the kernel's backlog and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        engine = engine_with(
            tmp_path,
            {"name": "down", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": model},
            {"name": "wrong-model", "base_url": base_url, "model": "no-such-model"},
            {"name": "stuck", "base_url": f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "model": model,
             "timeout_s": 1})
        expected = {"down": ["Endpoint 'down'", "cannot be reached", "base_url in LAB_ENDPOINTS"],
                    "wrong-model": ["Endpoint 'wrong-model'", "does not serve a model named 'no-such-model'",
                                    "HTTP 400", "Set model in LAB_ENDPOINTS"],
                    "stuck": ["Endpoint 'stuck'", "did not answer within 1 s", "timeout_s"]}
        for name, words in expected.items():
            with pytest.raises(EndpointError) as err:
                list(engine.models.generate("hi", GenerationSettings(max_new_tokens=4), model_id=f"endpoint:{name}"))
            for word in words:
                assert word in str(err.value), (name, str(err.value))
        # Compare and the Arena report the failure on the method or column and go on.
        [row] = ask(engine.runtime, engine.knowledge.bundled_document(), QUESTION, "base",
                    CompareConfig(model_id="endpoint:down"))
        assert row.done and "cannot be reached" in row.error
        columns = [ArenaColumn("endpoint:down"), ArenaColumn("endpoint:nope")]
        replies = sorted((r for r in stream_arena(engine.runtime, "hi", columns) if r.done), key=lambda r: r.index)
        assert "cannot be reached" in replies[0].error and "no endpoint 'nope'" in replies[1].error
    finally:
        silent.close()
    # The same process still answers through the working endpoint.
    final = list(remote.models.generate("hi", GenerationSettings(max_new_tokens=4), model_id="endpoint:local"))[-1]
    assert final.done and final.text


def test_cache_salt_is_per_user_across_request_groups():
    """Two Compare questions of one user share the server's cached document prefix; another user's never do."""
    from lab.core.device import choose_device
    from lab.inference.session import SessionManager
    sessions = SessionManager(choose_device(has_cuda=False, has_flash_attn=False), 2**20, loader=None)
    alice_1, alice_2 = sessions.new_caller("compare", "alice"), sessions.new_caller("arena", "alice")
    bob = sessions.new_caller("compare", "bob")
    assert alice_1 != alice_2
    assert cache_salt(alice_1) == cache_salt(alice_2) != cache_salt(bob)
    # A caller id without a user keeps its own group apart from everyone's.
    assert cache_salt(sessions.new_caller("compare")) != cache_salt(sessions.new_caller("compare"))
