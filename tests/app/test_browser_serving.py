"""Browser: two people ask the Playground at the same moment and both answers stream together, through one
batching engine; the System tab then shows that engine and the answers it gave."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Each page records, with the browser's clock, every new value its answer box takes.
RECORD = """() => { window.__grew = []; setInterval(() => {
    const box = document.querySelector('#playground-answer textarea');
    if (box && box.value && (window.__grew.at(-1)?.text !== box.value))
        window.__grew.push({t: Date.now(), text: box.value}); }, 20); }"""
DONE = ("() => { const t = document.querySelector('#playground-timings')?.innerText || '';"
        " return t.includes('new tokens') && !t.includes('streaming'); }")


def test_two_pages_stream_at_the_same_time_and_the_system_tab_counts_them(browser, live_app):
    pages = [browser.new_page(viewport={"width": 1300, "height": 1000}) for _ in range(2)]
    prompts = ["Write a long story about a lighthouse keeper and the sea.",
               "Write a long story about a baker in a small mountain village."]
    for page, prompt in zip(pages, prompts):
        page.goto(live_app)
        page.get_by_role("tab", name="System").click()
        page.locator("#playground-prompt textarea").fill(prompt)
        page.get_by_label("max_new_tokens").fill("160")
        page.evaluate(RECORD)
    for page in pages:  # as close together as one thread can click
        page.locator("#playground-run").click()
    for page in pages:
        page.wait_for_function(DONE, timeout=300_000)
    grew = [page.evaluate("window.__grew") for page in pages]
    finals = [page.locator("#playground-answer textarea").input_value() for page in pages]
    for seen, final in zip(grew, finals):
        assert len(seen) >= 3 and all(final.startswith(s["text"]) for s in seen)  # it streamed
    # Both streamed at once: each answer had grown before the other one's last token arrived. One after the
    # other, the second page would show nothing until the first answer was complete.
    assert grew[0][0]["t"] < grew[1][-1]["t"] and grew[1][0]["t"] < grew[0][-1]["t"], grew
    # The System tab's line for the engine reports what it answered (refreshed after each answer).
    status = pages[0].locator("#system-device")
    pages[0].wait_for_function("() => /\\d+ answered/.test(document.querySelector('#system-device').innerText)",
                               timeout=30_000)
    line = next(line for line in status.inner_text().splitlines() if "Batching" in line)
    answered = int(re.search(r"([\d,]+) answered", line).group(1).replace(",", ""))
    assert answered >= 2, line
    assert "prefix sharing" in line and "running" in line
    for page in pages:
        page.close()
