"""Browser: launch a tiny job from the Train tab, watch it complete, find its adapter in Compare;
start a tiny sweep from the Explain tab and see its table fill."""

from __future__ import annotations

import json
import threading

import pytest

from support import app_thread_stacks, tiny_job_yaml, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def replace_code(page, selector: str, text: str) -> None:
    """Type into a gr.Code editor (CodeMirror) as a user would: select all, then type."""
    editor = page.locator(f"{selector} .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(text)


def test_train_tab_runs_a_job_and_its_adapter_reaches_compare(browser, tiny_app):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(tiny_app.url)
    page.get_by_role("tab", name="Train").click()
    replace_code(page, "#train-config", tiny_job_yaml(tiny_app.model_dir, tiny_app.qa, "browser-lora", max_steps=6))
    page.locator("#train-launch").click()
    page.locator("#train-launched").get_by_text("Job").wait_for(timeout=30_000)
    seen_steps = set()
    for _ in range(600):  # the progress text moves step by step until the job completes
        text = page.locator("#train-progress").inner_text()
        if "step" in text:
            seen_steps.add(text.split("step ")[1].split(" ")[0])
        if "completed" in text:
            break
        page.wait_for_timeout(200)
    assert "completed" in page.locator("#train-progress").inner_text(), page.locator("#train-log").inner_text()
    assert len(seen_steps) >= 2, seen_steps  # the bar moved, not only jumped to the end
    assert page.locator("#train-loss canvas, #train-loss svg").count() > 0  # the loss curve is drawn

    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-methods").get_by_text("ft:browser-lora").wait_for(timeout=30_000)
    page.locator("#compare-methods").get_by_text("ft:browser-lora").click()
    page.locator("#compare-question textarea").fill("what is the capital of france ?")
    page.locator("#compare-ask").click()
    page.wait_for_function("() => { const c = document.querySelector('[data-method=\"ft:browser-lora\"]');"
                           " return c && c.innerText.includes('time to first token') && !c.innerText.includes('streaming') }",
                           timeout=120_000)

    # Its owner renames it in the Train tab: the adapters table and Compare's list follow without a reload.
    page.get_by_role("tab", name="Train").click()
    page.get_by_text("Adapters: list, rename, delete, merge and export").click()
    page.locator("#train-adapter-name input, #train-adapter-name textarea").first.fill("browser-lora")
    page.locator("#train-adapter-new-name input, #train-adapter-new-name textarea").first.fill("capital-lora")
    page.locator("#train-adapter-rename").click()
    page.locator("#train-adapter-result").get_by_text("Renamed").wait_for(timeout=30_000)
    table = page.locator("#train-adapters").inner_text()
    assert "capital-lora" in table and "browser-lora" not in table, table
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-methods").get_by_text("ft:capital-lora").wait_for(timeout=30_000)
    assert "ft:browser-lora" not in page.locator("#compare-methods").inner_text()
    page.close()


@pytest.fixture
def late_sweep_listing(tiny_app, monkeypatch):
    """(listed, release): the app's first sweep listing, the one the Explain tab's select refresh asks for, sets
    `listed` and answers only once `release` is set. So the refresh answers after Start has, the order a busy
    machine gives it (the tab's select handlers answer one after another, this one last)."""
    listed, release = threading.Event(), threading.Event()
    list_sweeps = tiny_app.engine.sweeps.all

    def held_first_listing():
        if not listed.is_set():
            listed.set()
            release.wait(300)
        return list_sweeps()
    monkeypatch.setattr(tiny_app.engine.sweeps, "all", held_first_listing)
    yield listed, release
    release.set()


def test_explain_tab_starts_a_sweep_and_fills_its_table(browser, tiny_app, late_sweep_listing):
    """The table follows the sweep to its decision, also when the tab's refresh of the sweep list answers after
    Start: that late answer once set the sweep being watched back to none, and the table stopped refreshing."""
    listed, release = late_sweep_listing
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(tiny_app.url)
    page.get_by_role("tab", name="Explain").click()
    wait_until(listed.is_set, "the Explain tab's select refresh asked for the sweep list", timeout_s=120)
    page.locator("#explain-sweep").get_by_text("Sweep this knob").click()
    base = {"kind": "sft", "model_id": str(tiny_app.model_dir), "datasets": [{"path": str(tiny_app.qa), "format": "qa"}],
            "eval_dataset": {"path": str(tiny_app.qa), "format": "qa"}, "max_steps": 2,
            "per_device_train_batch_size": 2, "max_length": 32, "eval_steps": 2, "save_steps": 2,
            "lora_preset": "minimal"}
    sweep = {"name": "browser-rank", "base": base, "grid": {"r": [2, 4]}, "tie": {"lora_alpha": "2*r"}}
    replace_code(page, "#explain-sweep", json.dumps(sweep))  # JSON is valid YAML
    page.locator("#explain-sweep-start").click()
    page.wait_for_function("() => document.querySelector('#explain-sweep-table')?.innerText.includes('r=4')",
                           timeout=60_000)
    release.set()  # the tab's refresh answers now, after Start's answer and the table's first rows
    try:
        page.wait_for_function("() => document.querySelector('#explain-sweep-decision')?.innerText.includes('r=')"
                               " && !document.querySelector('#explain-sweep-decision').innerText.includes('finished…')",
                               timeout=600_000)
    except Exception as exc:  # say what the jobs were doing, so a failure on a loaded machine can be read
        jobs = tiny_app.engine.jobs.all()
        logs = "\n".join(f"--- {j['id']} {j['state']} {j.get('message')}\n{tiny_app.engine.jobs.log(j['id'], 15)}"
                          for j in jobs)
        raise AssertionError(f"sweep decision never shown: {page.locator('#explain-sweep-decision').inner_text()}\n"
                             f"sweep watched: {page.locator('#explain-sweep-id input').input_value()!r}\n"
                             f"{page.locator('#explain-sweep-table').inner_text()}\n{logs}\n"
                             f"toasts: {page.locator('.toast-body').all_inner_texts()}\n{app_thread_stacks()}") from exc
    table = page.locator("#explain-sweep-table").inner_text()
    assert table.count("completed") == 2, table

    # The sweep's two adapters are kept out of Compare's list until asked for, and listed under their sweep.
    sweep_id = tiny_app.engine.sweeps.all()[-1]["id"]
    page.reload()
    page.get_by_role("tab", name="Compare").click()
    methods = page.locator("#compare-methods")
    methods.get_by_text("rag", exact=True).wait_for(timeout=30_000)
    assert sweep_id not in methods.inner_text(), methods.inner_text()
    page.locator("#compare-with-sweeps").get_by_label("show sweep adapters").check()
    methods.get_by_text(f"ft:{sweep_id}-p1").wait_for(timeout=30_000)
    assert f"ft:{sweep_id}-p0" in methods.inner_text()
    page.get_by_role("tab", name="Train").click()
    page.get_by_text("Adapters: list, rename, delete, merge and export").click()
    page.wait_for_function("(name) => document.querySelector('#train-adapters')?.innerText.includes(name)",
                           arg=f"{sweep_id}-p1", timeout=30_000)
    cells = [c.strip() for c in page.locator("#train-adapters").inner_text().splitlines()]
    names = [c for c in cells if c.startswith(f"{sweep_id}-p")]
    assert names == [f"{sweep_id}-p0", f"{sweep_id}-p1"], cells  # together, in point order
    assert cells.count(sweep_id) == 2, cells  # each one's sweep column names the sweep
    page.close()
