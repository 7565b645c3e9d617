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


def test_system_tab_lists_a_request_in_flight_and_cancels_it(browser, live_app, embedded_engine):
    """A long answer in flight shows as a row (its id, user, model, state); typing its id and pressing Cancel stops
    it, and the row leaves the list."""
    import threading

    from lab.core.errors import RequestCancelled
    from lab.inference.generate import GenerationSettings
    from support import wait_until

    ended: list[str] = []

    def answer():
        caller = embedded_engine.requests.new_caller("playground", "local")
        try:
            for _ in embedded_engine.models.generate("Write a long story about a river.", GenerationSettings(max_new_tokens=600),
                                             caller=caller):
                pass
            ended.append("finished")
        except RequestCancelled as exc:
            ended.append(str(exc))

    worker = threading.Thread(target=answer, daemon=True)
    worker.start()
    wait_until(lambda: [r["state"] for r in embedded_engine.requests.running_requests()] == ["running"])
    [row] = embedded_engine.requests.running_requests()
    page = browser.new_page()
    page.goto(live_app)
    page.get_by_role("tab", name="System").click()
    table = page.locator("#system-requests")
    page.wait_for_function("() => document.querySelector('#system-requests')?.innerText.includes('playground-')",
                           timeout=30_000)  # the timer refreshes the list every 3 s
    assert "local" in table.inner_text() and "running" in table.inner_text()
    page.get_by_label("Request id").fill(str(row["id"]))
    page.locator("#system-cancel").click()
    page.locator("#system-status").get_by_text(f"Request {row['id']} cancelled").wait_for(timeout=30_000)
    worker.join(60)
    assert ended and "cancelled by its owner" in ended[0]
    page.wait_for_function("() => !document.querySelector('#system-requests').innerText.includes('playground-')",
                           timeout=30_000)
    page.close()


def test_reloading_the_page_cancels_its_playground_answer(browser, live_app, embedded_engine):
    """A page that goes away takes its requests with it: the answer stops and leaves the list of requests."""
    from support import wait_until

    page = browser.new_page()
    page.goto(live_app)
    page.get_by_role("tab", name="System").click()
    page.locator("#playground-prompt textarea").fill("Write a long story about a river and the town beside it.")
    page.get_by_label("max_new_tokens").fill("1500")
    page.locator("#playground-run").click()
    wait_until(lambda: [r["kind"].split("-")[0] for r in embedded_engine.requests.running_requests()] == ["playground"],
               timeout_s=60)
    page.reload()
    wait_until(lambda: embedded_engine.requests.running_requests() == [], timeout_s=60)
    page.close()
