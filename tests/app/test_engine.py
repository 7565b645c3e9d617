"""Engine and CLI: bad input gives clear messages, the engine keeps working afterwards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.cli import main
from lab.core.errors import DataDirError, ModelLoadError
from lab.core.settings import REPO_ROOT, LabSettings
from lab.engine import Engine
from lab.inference.generate import GenerationSettings


def answer(engine, prompt, **kw):
    return list(engine.models.generate(prompt, GenerationSettings(max_new_tokens=4), **kw))[-1]


def test_empty_prompt_is_refused_then_engine_still_answers(tiny_engine):
    with pytest.raises(ValueError, match="prompt is empty"):
        answer(tiny_engine, "   ")
    assert answer(tiny_engine, "what is the capital").done


def test_absurd_max_new_tokens_is_refused(tiny_engine):
    with pytest.raises(ValueError, match="limit"):  # a valid setting above this lab's limit (2048)
        list(tiny_engine.models.generate("hi", GenerationSettings(max_new_tokens=100_000)))
    with pytest.raises(ValueError, match="max_new_tokens"):  # past any model's reach: refused by the settings
        GenerationSettings(max_new_tokens=10**7)
    with pytest.raises(ValueError, match="window"):  # below the limit but past the tiny model's 256 positions
        list(tiny_engine.models.generate("the model", GenerationSettings(max_new_tokens=1000)))


@pytest.mark.parametrize("model_id", ["no-such-owner/no-such-model", "../../etc", "/definitely/not/here"])
def test_unknown_model_id_is_a_clear_error(tiny_engine, model_id):
    with pytest.raises(ModelLoadError, match="Use 'embedded'"):
        answer(tiny_engine, "hello", model_id=model_id)
    assert answer(tiny_engine, "hello").done


def test_unwritable_data_dir_names_the_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    engine = Engine(LabSettings(data_dir=blocker / "data", model_id="embedded", memory_budget_gb=1.0))
    with pytest.raises(DataDirError, match="LAB_DATA_DIR"):
        answer(engine, "hello")


def test_settings_validate_names(monkeypatch):
    with pytest.raises(ValueError, match="LAB_MEMORY_BUDGET_GB"):
        LabSettings(memory_budget_gb=-1)
    with pytest.raises(ValueError, match="user:password"):
        LabSettings(auth="alice").auth_pairs()
    assert LabSettings(auth="alice:pw, bob:x").auth_pairs() == [("alice", "pw"), ("bob", "x")]


def test_cli_generate_json_on_tiny_model(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    assert main(["generate", "--prompt", "the capital", "--max-new-tokens", "3", "--json",
                 "--model", str(tiny_model_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["timings"]["new_tokens"] <= 3 and out["finish_reason"] in ("eos", "length")


def test_cli_errors_exit_2_with_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))
    assert main(["generate", "--prompt", "", "--model", "embedded"]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert main(["generate", "--prompt", "hi", "--model", "nobody/nothing"]) == 2
    assert "Hub cannot be reached" in capsys.readouterr().err


def test_cli_info_runs_as_a_module(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lab", "info"], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={"PATH": "", "LAB_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["device"] in ("cpu", "cuda") and info["session"]["entries"] == []


def test_the_engine_is_a_thin_object_owning_services_without_mixins(tmp_path):
    """The facade composes services (go-to-definition lands in one file): no base classes, no shims."""
    engine = Engine(LabSettings(data_dir=tmp_path / "data", auth=""))
    assert Engine.__mro__ == (Engine, object)
    services = {name: value for name, value in vars(engine).items()
                if type(value).__module__.startswith("lab.engine.")}
    assert set(services) == {"uploads", "models", "requests", "jobs", "adapters", "datasets", "knowledge", "arena",
                             "history", "battles", "explain", "sweeps", "devices", "workflows"}
    for service in services.values():
        assert type(service).__mro__ == (type(service), object), type(service)
    # device and sessions are the Runtime's, read through it on first use: a bookkeeping command builds an Engine
    # without detecting a device or building a session manager (tests/app/test_cli_startup.py)
    assert {n for n in vars(Engine) if not n.startswith("__")} == {"close", "device", "sessions"}
    assert engine.settings is engine.runtime.settings and engine.sessions is engine.runtime.sessions
    assert engine.device is engine.runtime.device


def test_importing_the_engine_package_loads_no_torch_of_its_own():
    """lab/engine/*.py import torch and transformers only inside the functions that need them."""
    import ast
    for path in (REPO_ROOT / "lab" / "engine").glob("*.py"):
        top = [node for node in ast.parse(path.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
        assert not names & {"torch", "transformers", "trl", "peft", "gradio"}, path
