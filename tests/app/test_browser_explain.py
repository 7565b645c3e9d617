"""Browser: open a catalog entry, change an input, and see its number and plot change."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_explain_entry_live_numbers_follow_inputs(browser, tiny_app):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.goto(tiny_app.url)
    page.get_by_role("tab", name="Explain").click()
    page.locator("#explain-search textarea").fill("warmup_steps")
    page.wait_for_function("() => document.querySelector('#explain-text')?.innerText.includes('Warmup steps')")
    out = page.locator("#explain-lr-out")
    out.get_by_text("get_scheduler").wait_for(timeout=30_000)
    assert "cosine" in out.inner_text()
    plot = page.locator("#explain-lr-plot")
    page.wait_for_timeout(500)  # let the chart finish drawing before taking its picture
    before = plot.screenshot()

    page.get_by_label("lr_scheduler_type").click()
    page.get_by_role("option", name="constant_with_warmup").click()
    page.wait_for_function("() => document.querySelector('#explain-lr-out').innerText.includes('constant_with_warmup')",
                           timeout=30_000)
    assert "last 0.0002" in out.inner_text()  # constant after warmup: the last step keeps the peak
    page.wait_for_timeout(500)
    assert plot.screenshot() != before
    page.close()


def test_explain_unknown_name_through_the_api(tiny_app):
    from gradio_client import Client
    client = Client(tiny_app.url, verbose=False)
    assert "LoRA rank" in client.predict("r", api_name="/explain")
    with pytest.raises(Exception, match="did you mean"):
        client.predict("lora_rnak", api_name="/explain")
