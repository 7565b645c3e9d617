"""Browser: what the Train tab shows a new user: curves on numeric axes from the first job, a job list that is
really newest first, states without stale ETAs or repeated words, and a Delete that empties the list."""

from __future__ import annotations

import pytest
import yaml
from conftest import _tiny_app

from support import tiny_job_yaml

pytestmark = [pytest.mark.browser, pytest.mark.slow]

AXES_JS = """(id) => Array.from(document.querySelectorAll(`#${id} [aria-roledescription="axis"]`))
    .map(a => a.getAttribute('aria-label'))"""
ROWS_JS = """() => Array.from(document.querySelectorAll('#train-jobs [role=row]'))
    .filter(r => Number(r.getAttribute('aria-rowindex')) > 1)
    .map(r => Array.from(r.children).map(c => c.innerText.trim()))"""


@pytest.fixture(scope="module")
def fresh_app(tmp_path_factory):
    """An app over a data directory no job has run in yet: the first-job experience."""
    demo, app = _tiny_app(tmp_path_factory)
    yield app
    demo.close()
    app.engine.close()


def replace_code(page, selector: str, text: str) -> None:
    editor = page.locator(f"{selector} .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def submit(app, name: str, steps: int) -> str:
    text = tiny_job_yaml(app.model_dir, app.qa, name, max_steps=steps)
    return app.engine.jobs.submit(app.engine.jobs.config_from_dict(yaml.safe_load(text), source="the test"))


def axis_labels(page, elem_id: str) -> list[str]:
    """What a screen reader hears about each axis of a plot, e.g. "X-axis titled 'step' for a linear scale …"
    (vega writes it from the scale it really drew)."""
    return page.evaluate(AXES_JS, elem_id)


def job_rows(page) -> list[list[str]]:
    """The job table's cells as shown, top to bottom, header left out: job, kind, state, step, ETA, tokens/s,
    message (gradio's grid marks its rows with role=row and numbers them, the header being 1)."""
    return page.evaluate(ROWS_JS)


def test_first_job_draws_numeric_curves_and_the_state_line_follows_it(browser, fresh_app):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(fresh_app.url)
    page.get_by_role("tab", name="Train").click()
    page.wait_for_timeout(3000)  # the list's poll has drawn the empty plots once, as on a first visit
    replace_code(page, "#train-config", tiny_job_yaml(fresh_app.model_dir, fresh_app.qa, "first-lora", max_steps=6))
    page.locator("#train-launch").click()
    page.wait_for_function("() => document.querySelector('#train-progress')?.innerText.includes('completed')",
                           timeout=900_000)
    page.wait_for_function("(id) => document.querySelectorAll(`#${id} [aria-roledescription=\"axis\"]`).length >= 2",
                           arg="train-loss", timeout=30_000)
    for plot in ("train-loss", "train-lr", "train-grad"):
        labels = axis_labels(page, plot)
        x = [a for a in labels if a.startswith("X-axis")]
        y = [a for a in labels if a.startswith("Y-axis")]
        assert x and "linear scale" in x[0], labels  # steps on a number line, not a row of categories
        assert y and "linear scale" in y[0], labels
    # A curve is drawn, not only its axes: the chart was built before any loss existed.
    drawn = page.evaluate("() => Array.from(document.querySelectorAll('#train-loss .mark-line path'))"
                          ".filter(p => (p.getAttribute('d') || '').length > 10).length")
    assert drawn >= 1
    # The line above the list says where the job is now, not where it was at launch.
    page.wait_for_function("() => document.querySelector('#train-launched')?.innerText.includes('completed')",
                           timeout=30_000)
    shown = page.locator("#train-launched").inner_text() + page.locator("#train-jobs").inner_text()
    assert "is running" not in shown and "completed: completed" not in shown, shown
    page.close()


def test_job_list_is_newest_first_stopped_jobs_have_no_eta_and_delete_removes(browser, fresh_app):
    older = submit(fresh_app, "older-lora", steps=2)
    # Generous waits: on a shared machine a job may sit in the queue until CPU slots or memory are free.
    assert fresh_app.engine.jobs.wait(older, timeout_s=900)["state"] == "completed"
    newer = submit(fresh_app, "newer-lora", steps=5000)
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(fresh_app.url)
    page.get_by_role("tab", name="Train").click()
    # The watched job after a (re)load is the newest, and the list starts with it.
    page.wait_for_function("(id) => document.querySelector('#train-jobs')?.innerText.includes(id)",
                           arg=newer, timeout=30_000)
    assert page.locator("#train-job input").input_value() == newer
    ids = [row[0] for row in job_rows(page)]
    assert ids.index(newer) < ids.index(older), ids
    page.wait_for_function("() => /running · step [1-9]/.test(document.querySelector('#train-progress')?.innerText)",
                           timeout=900_000)
    page.get_by_role("button", name="Kill").click()
    page.wait_for_function("() => document.querySelector('#train-progress')?.innerText.startsWith('stopped')",
                           timeout=60_000)
    page.wait_for_timeout(2500)  # one more poll: the row must stay without an ETA
    cells = next(row for row in job_rows(page) if row[0] == newer)
    assert cells[2] == "stopped" and cells[4] == "", cells  # a killed job is going nowhere: no time left to show
    assert "ETA —" in page.locator("#train-progress").inner_text()

    page.locator("#train-delete").click()
    page.wait_for_function("(id) => !document.querySelector('#train-jobs')?.innerText.includes(id)",
                           arg=newer, timeout=30_000)
    assert older in page.locator("#train-jobs").inner_text()
    assert page.locator("#train-job input").input_value() != newer
    page.close()
