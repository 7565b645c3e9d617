"""Browser: the System tab lists the embedded model, per device too, and the Playground streams an answer."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_system_tab_and_playground_stream(browser, live_app, tmp_path):
    page = browser.new_page()
    page.goto(live_app)
    page.get_by_role("tab", name="System").click()
    page.wait_for_function("() => document.querySelector('#system-loaded')?.innerText.includes('embedded (float32)')",
                           timeout=30_000)
    # Who holds what: the job slot(s), then the CPU the models are served from, holding the embedded model.
    page.wait_for_function("() => { const t = document.querySelector('#system-devices')?.innerText || '';"
                           " return t.includes('cpu:0') && t.includes('embedded (float32)'); }", timeout=30_000)
    page.locator("#playground-prompt textarea").fill("Write three sentences about Paris, the capital of France.")
    # Record every value the answer box takes, to see it grow token by token.
    page.evaluate("""() => { window.__seen = []; setInterval(() => {
        const box = document.querySelector('#playground-answer textarea');
        if (box && box.value && window.__seen.at(-1) !== box.value) window.__seen.push(box.value); }, 20); }""")
    page.locator("#playground-run").click()
    page.locator("#playground-timings").get_by_text("new tokens").wait_for(timeout=120_000)
    page.wait_for_function("() => !document.querySelector('#playground-timings').innerText.includes('streaming')",
                           timeout=120_000)
    seen = page.evaluate("window.__seen")
    final = page.locator("#playground-answer textarea").input_value()
    assert "Paris" in final
    assert len(seen) >= 3, seen  # partial answers appeared before the final one
    assert all(final.startswith(s) for s in seen)
    page.screenshot(path=str(tmp_path / "system.png"), full_page=True)
    page.close()
