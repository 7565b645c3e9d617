"""A visual check of the web app: every tab driven through its main action, one full-page PNG each.

    python -m lab screenshots shots/                 # the embedded model, a fresh temporary data directory
    python -m lab screenshots shots/ --model PATH    # another model folder (a small one is faster)

The app starts in this process on a free port over an empty data directory, as a new user would
first see it; headless Chromium (Playwright, Debian's /usr/bin/chromium when present) then trains
a few LoRA steps in Train, asks and evaluates in Compare, chats in the Arena, opens an Explain
entry and generates in the System Playground. A step that fails is reported and its page is still
saved, so the pictures show what went wrong. Look at the PNGs: that is the check.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from lab.core.settings import REPO_ROOT, LabSettings

CHROMIUM = "/usr/bin/chromium"
JOB_NAME = "screenshot-lora"
WIDTH = 1400


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _job_yaml(engine, model_id: str) -> str:
    """The 'teach this document' preset cut to a few short steps, so the Train tab shows a finished job."""
    cfg = yaml.safe_load(engine.jobs.preset_yaml(engine.jobs.TEACH_PRESET))
    cfg |= {"model_id": model_id, "output_name": JOB_NAME, "max_steps": 4, "per_device_train_batch_size": 2,
            "max_length": 64, "eval_steps": 2, "save_steps": 100, "logging_steps": 1}
    return yaml.safe_dump(cfg, sort_keys=False)


def _replace_code(page, selector: str, text: str) -> None:
    page.locator(f"{selector} .cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def _train(page, engine, model_id: str) -> None:
    page.get_by_role("tab", name="Train").click()
    _replace_code(page, "#train-config", _job_yaml(engine, model_id))
    page.locator("#train-launch").click()
    page.wait_for_function("() => /completed|failed/.test(document.querySelector('#train-progress')?.innerText)",
                           timeout=900_000)
    page.wait_for_timeout(2500)  # one more poll draws the last points
    page.get_by_text("Adapters: list, rename, delete, merge and export").click()  # the finished job's adapter
    page.wait_for_function("() => document.querySelector('#train-adapters')?.innerText.includes('screenshot-lora')",
                           timeout=30_000)


def _compare(page, engine, model_id: str) -> None:
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-question textarea").fill("What does CAG store in the KV cache?")
    page.locator("#compare-ask").click()
    page.wait_for_function("() => { const c = document.querySelectorAll('#compare-cards .lab-card');"
                           " return c.length && Array.from(c).every(x => x.innerText.includes('time to first token')"
                           " && !x.innerText.includes('streaming')) }", timeout=600_000)
    page.locator("input[aria-label='questions (0 = all)']").fill("2")
    page.locator("#compare-eval").click()
    page.wait_for_function("() => document.querySelectorAll('#compare-eval-chart [aria-roledescription=\"axis\"]')"
                           ".length >= 2", timeout=900_000)


def _arena(page, engine, model_id: str) -> None:
    page.get_by_role("tab", name="Arena").click()
    page.wait_for_timeout(1000)  # the model lists refresh when the tab opens
    page.locator("#arena-model-1 input").click()
    adapters = [o for o in page.get_by_role("option").all_inner_texts() if JOB_NAME in o]
    if adapters:  # base against the adapter just trained
        page.get_by_role("option", name=adapters[0]).click()
    else:
        page.keyboard.press("Escape")
    page.locator("#arena-prompt textarea").fill("Explain LoRA in one sentence.")
    page.locator("#arena-send").click()
    page.wait_for_function("() => [0, 1].every(i => { const n = document.querySelector(`#arena-timings-${i}`);"
                           " return n && /tok\\/s|⚠/.test(n.innerText) && !n.innerText.includes('streaming') })",
                           timeout=600_000)


def _explain(page, engine, model_id: str) -> None:
    page.get_by_role("tab", name="Explain").click()
    page.locator("#explain-search textarea").fill("warmup_steps")
    page.wait_for_function("() => document.querySelector('#explain-lr-out')?.innerText.includes('get_scheduler')",
                           timeout=60_000)
    page.wait_for_timeout(500)


def _system(page, engine, model_id: str) -> None:
    page.get_by_role("tab", name="System").click()
    page.locator("#playground-prompt textarea").fill("What is the capital of France?")
    page.locator("#playground-run").click()
    page.wait_for_function("() => { const t = document.querySelector('#playground-timings')?.innerText || '';"
                           " return t.includes('tok/s') && !t.includes('streaming') }", timeout=600_000)
    page.wait_for_timeout(3500)  # the tab's poll shows what is now loaded


TABS: list[tuple[str, Callable]] = [("train", _train), ("compare", _compare), ("arena", _arena),
                                    ("explain", _explain), ("system", _system)]
"""In this order: the adapter trained first then shows up in Compare and the Arena."""


def take_screenshots(engine, out_dir: Path, model_id: str, chromium: str | None = None) -> list[tuple[Path, str]]:
    """Serve the app over `engine`, drive each tab, save <out_dir>/<n>-<tab>.png; (path, problem or '') each."""
    from playwright.sync_api import sync_playwright

    if str(REPO_ROOT) not in sys.path:  # app.py sits beside lab/, outside the package
        sys.path.insert(0, str(REPO_ROOT))
    from app import build_app, launch

    demo = build_app(engine)
    launch(demo, engine, port=_free_port(), prevent_thread_lock=True, quiet=True)
    saved = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
            page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
            page.goto(demo.local_url)
            for n, (name, drive) in enumerate(TABS, start=1):
                problem = ""
                try:
                    drive(page, engine, model_id)
                except Exception as exc:  # keep going: the picture of a failed step is worth seeing too
                    problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                path = out_dir / f"{n}-{name}.png"
                page.screenshot(path=str(path), full_page=True)
                saved.append((path, problem))
                print(f"{path}" + (f"  ({problem})" if problem else ""), flush=True)
            browser.close()
    finally:
        demo.close()
    return saved


def _cmd_screenshots(engine, args: argparse.Namespace) -> None:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The embedded model is converted once into the usual data directory; the app itself starts on an empty one.
    model_id = args.model or str(engine.models.prepare_embedded())
    chromium = args.chromium or (CHROMIUM if Path(CHROMIUM).exists() else None)
    with tempfile.TemporaryDirectory(prefix="lab-screenshots-") as data:
        os.environ["LAB_DATA_DIR"] = data  # app.py's own module-level engine must not touch the real data either
        fresh = type(engine)(LabSettings(data_dir=Path(data), model_id=model_id, load_in_4bit=False, auth=""))
        try:
            saved = take_screenshots(fresh, out_dir, model_id, chromium)
        finally:
            fresh.close()
    failed = [f"{p.name}: {problem}" for p, problem in saved if problem]
    if failed:
        raise RuntimeError("some tabs did not finish their action (their pictures are saved):\n" + "\n".join(failed))


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    shots = subparsers.add_parser("screenshots", help="drive every tab of the web app in headless Chromium on a "
                                                      "fresh data directory and save a full-page PNG of each")
    shots.add_argument("out_dir", help="folder for the PNGs (created if missing)")
    shots.add_argument("--model", default="", help="model folder or id to serve (default: the embedded model)")
    shots.add_argument("--chromium", default="", help=f"Chromium executable (default: {CHROMIUM} when present, "
                                                      "else Playwright's own)")
    shots.set_defaults(fn=_cmd_screenshots)
