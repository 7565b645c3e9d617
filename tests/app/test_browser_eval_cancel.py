"""Browser: a batch evaluation in the Compare tab stops when its page says so. Cancel keeps, shows and saves the
answers scored so far; reloading the page ends that page's evaluation, and nothing of it is left running.

    .venv/bin/python -m pytest -q tests/app/test_browser_eval_cancel.py
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from support import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TABLE_JS = """() => Array.from(document.querySelectorAll('#compare-eval-table [role=row]'))
    .map(r => Array.from(r.children).map(c => c.innerText.trim()))"""


@pytest.fixture
def held_third_answer(monkeypatch):
    """Evaluation answers go through until two are scored; the third waits before it starts until `release` is
    set, so the test acts while a run is certainly in progress (however fast the tiny model answers)."""
    from lab.knowledge import evaluation
    real = evaluation.stream_compare
    gate = SimpleNamespace(asked=0, release=threading.Event())

    def held(*args, **kwargs):
        gate.asked += 1
        if gate.asked > 2:
            wait_until(gate.release.is_set, "the test lets the third answer start", 300)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "stream_compare", held)
    yield gate
    gate.release.set()


def start_evaluation(page, app) -> None:
    """Score the tiny app's 4-question QA file with base and rag: 8 answers."""
    page.goto(app.url)
    for method in ("cag", "full"):
        page.locator("#compare-methods").get_by_label(method, exact=True).uncheck()
    page.locator("#compare-qa input[type=file]").set_input_files(str(app.qa))
    page.locator("#compare-qa").get_by_text("qa.jsonl").wait_for(timeout=30_000)
    page.locator("input[aria-label='questions (0 = all)']").fill("0")
    page.locator("#compare-eval").click()


def running(engine) -> list[dict]:
    return engine.devices.stats()["evaluations"]


def cancelled(engine) -> bool:
    """The one evaluation in progress has been told to stop."""
    return [run["cancelled"] for run in running(engine)] == [True]


def newest_saved(engine) -> dict:
    return json.loads(Path(next(p for p in engine.knowledge.evaluations("local") if p.suffix == ".json")).read_text())


def test_cancel_keeps_and_shows_the_rows_scored_so_far(browser, tiny_app, held_third_answer):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    start_evaluation(page, tiny_app)
    wait_until(lambda: held_third_answer.asked > 2, "the third answer is reached", 120)
    page.locator("#compare-eval-status").get_by_text("2 of 8 answers").wait_for(timeout=60_000)

    page.locator("#compare-eval-cancel").click()
    wait_until(lambda: cancelled(tiny_app.engine), "the Cancel reaches the run")
    held_third_answer.release.set()  # the held answer may start now: it must be dropped, not scored
    status = page.locator("#compare-eval-status")
    status.get_by_text("Cancelled after 2 of 8 answers").wait_for(timeout=60_000)
    assert "saved in your workspace" in status.inner_text()
    header, *rows = page.evaluate(TABLE_JS)
    answered = {row[0]: row[header.index("n")] for row in rows}
    assert answered == {"base": "2", "rag": "0"}, (header, rows)  # base answered two; rag never began
    saved = newest_saved(tiny_app.engine)
    assert saved["cancelled"] and [(r["method"], r["index"]) for r in saved["rows"]] == [("base", 0), ("base", 1)]
    wait_until(lambda: running(tiny_app.engine) == [], "the cancelled run ends")
    page.close()


def test_reloading_the_page_ends_its_evaluation(browser, tiny_app, held_third_answer):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    start_evaluation(page, tiny_app)
    wait_until(lambda: held_third_answer.asked > 2, "the third answer is reached", 120)
    assert len(running(tiny_app.engine)) == 1

    page.reload()
    wait_until(lambda: cancelled(tiny_app.engine), "the reload cancels the run")
    held_third_answer.release.set()
    wait_until(lambda: running(tiny_app.engine) == [], "nothing of the page's evaluation is left running")
    saved = newest_saved(tiny_app.engine)  # what it had scored is kept, as after Cancel
    assert saved["cancelled"] and saved["answered"] == 2 and len(saved["rows"]) == 2
    page.close()
