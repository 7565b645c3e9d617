"""Browser: an adapter finished after the page was opened reaches the Arena's model lists without a restart,
Compare's name for it (ft:NAME) works in a column, and both columns start greedy so they compare like with like."""

from __future__ import annotations

import pytest
import yaml

from support import tiny_job_yaml

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_new_adapter_reaches_the_arena_and_ft_names_work(browser, tiny_app):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(tiny_app.url)  # opened before the adapter exists
    text = tiny_job_yaml(tiny_app.model_dir, tiny_app.qa, "arena-lora", max_steps=2)
    job = tiny_app.engine.jobs.submit(tiny_app.engine.jobs.config_from_dict(yaml.safe_load(text), source="the test"))
    assert tiny_app.engine.jobs.wait(job, timeout_s=900)["state"] == "completed"
    adapter = next(a.name for a in tiny_app.engine.adapters.all() if a.job_id == job)

    page.get_by_role("tab", name="Arena").click()
    page.locator("#arena-model-0 input").click()
    options = page.get_by_role("option")
    options.first.wait_for(timeout=10_000)
    shown = options.all_inner_texts()
    entry = next((o for o in shown if f"+ adapter {adapter}" in o), None)
    assert entry, shown
    assert "2 steps" in entry and "loss" in entry, entry  # the entry says what the adapter is
    page.keyboard.press("Escape")

    temperatures = [page.locator(f"#arena-col-{i} input[type=number]").first.input_value() for i in (0, 1)]
    assert temperatures[0] == temperatures[1], temperatures

    model = page.locator("#arena-model-1 input")
    model.fill(f"ft:{adapter}")
    model.press("Enter")
    page.locator("#arena-prompt textarea").fill("what is the capital of france ?")
    page.locator("#arena-send").click()
    page.wait_for_function("() => { const n = document.querySelector('#arena-timings-1');"
                           " return n && (n.innerText.includes('tok/s') || n.innerText.includes('⚠')) "
                           "&& !n.innerText.includes('streaming') }", timeout=120_000)
    note = page.locator("#arena-timings-1").inner_text()
    assert "⚠" not in note and "tok/s" in note, note
    page.close()
