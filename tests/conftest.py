"""Shared fixtures: a tiny random Llama with a locally built tokenizer, and the real engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from support import launch_app, save_tiny_model

# Tests never touch the network: the Hub is unreachable on CI anyway, this only makes it fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama folder, usable as a model id (local path)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> list[Path]:
    """Three different tiny models of equal size, for eviction tests."""
    return [save_tiny_model(tmp_path_factory.mktemp(f"tiny-llama-{i}"), seed=i + 1) for i in range(3)]


@pytest.fixture
def tiny_engine(tmp_path, tiny_model_dir):
    """An engine over a private data dir whose default model is the tiny Llama."""
    from lab.core.device import choose_device
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    settings = LabSettings(data_dir=tmp_path / "data", model_id=str(tiny_model_dir), memory_budget_gb=1.0,
                           load_in_4bit=False, auth="")
    return Engine(settings, device=choose_device(has_cuda=False, has_flash_attn=False))


@pytest.fixture(scope="session")
def embedded_engine():
    """The real engine on the embedded SmolLM2 (materialised once into the default data dir)."""
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    return Engine(LabSettings(model_id="embedded", load_in_4bit=False, memory_budget_gb=8.0, auth=""))


@pytest.fixture(scope="session")
def live_app(embedded_engine):
    """The app over the embedded model, with the model already loaded, served on a free port."""
    embedded_engine.models.load()
    demo, url = launch_app(embedded_engine)
    yield url
    demo.close()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright (never Playwright's own browser download)."""
    pw_sync = pytest.importorskip("playwright.sync_api")
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Debian's chromium is missing: run `make test`, which installs it, or apt-get install chromium")
    with pw_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-quic"])
        yield browser
        browser.close()


def _tiny_app(tmp_path_factory, auth: str = ""):
    import json
    from types import SimpleNamespace

    from lab.core.device import choose_device
    from lab.core.settings import LabSettings
    from lab.engine import Engine
    model_dir = save_tiny_model(tmp_path_factory.mktemp("tiny-app-model"))
    qa = tmp_path_factory.mktemp("tiny-app-qa") / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"what is the capital of france {n} ?", "answer": "paris"}) + "\n"
                          for n in "one two three four".split()))
    engine = Engine(LabSettings(data_dir=tmp_path_factory.mktemp("tiny-app-data"), model_id=str(model_dir),
                                memory_budget_gb=1.0, load_in_4bit=False, auth=auth, cpu_job_slots=2),
                    device=choose_device(has_cuda=False, has_flash_attn=False))
    demo, url = launch_app(engine)
    return demo, SimpleNamespace(url=url, model_dir=model_dir, qa=qa, engine=engine)


@pytest.fixture(scope="session")
def tiny_app(tmp_path_factory):
    """The app over a tiny model (no embedded model needed), for fast browser tests of the UI:
    .url, .model_dir, .qa (a 4-line QA file) and .engine."""
    demo, app = _tiny_app(tmp_path_factory)
    yield app
    demo.close()


@pytest.fixture(scope="session")
def tiny_auth_app(tmp_path_factory):
    """Like tiny_app, with sign-in for the users alice/a1 and bob/b2."""
    demo, app = _tiny_app(tmp_path_factory, auth="alice:a1,bob:b2")
    yield app
    demo.close()


