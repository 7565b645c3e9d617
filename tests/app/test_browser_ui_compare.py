"""Browser: the Compare tab uses the document a person just dropped, finds their uploads again after a reload
without error badges, and draws evaluation scores as side-by-side bars on a 0-1 axis kept in their workspace."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

AXES_JS = """(id) => Array.from(document.querySelectorAll(`#${id} [aria-roledescription="axis"]`))
    .map(a => a.getAttribute('aria-label'))"""


def test_a_dropped_file_is_the_document_in_use_and_comes_back_after_reload(browser, tiny_app, tmp_path):
    doc = tmp_path / "river_notes.md"
    doc.write_text("# River notes\n\nThe river runs through the capital city of France, which is Paris.\n")
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(tiny_app.url)
    assert page.get_by_label("bundled guide").is_checked()
    page.locator("#compare-upload input[type=file]").set_input_files(str(doc))
    page.wait_for_function("() => document.querySelector('#compare-doc')?.innerText.includes('river_notes.md')",
                           timeout=30_000)
    assert page.get_by_label("upload", exact=True).is_checked()  # the radio follows the drop
    assert "bundled" not in page.locator("#compare-doc").inner_text()

    page.reload()
    page.get_by_label("my uploads").check()
    page.wait_for_function("() => document.querySelector('#compare-doc')?.innerText.includes('river_notes.md')",
                           timeout=30_000)
    assert page.locator("#compare-saved input").input_value() == "river_notes.md"
    assert page.locator(".toast-body").count() == 0  # no error popped up
    assert page.locator(".error").count() == 0, page.locator(".error").all_inner_texts()  # no red badges
    page.close()


def test_evaluation_chart_has_one_bar_per_metric_and_method_on_a_0_to_1_axis(browser, tiny_app):
    methods = ["base", "rag"]
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(tiny_app.url)
    for method in ("cag", "full"):
        page.locator("#compare-methods").get_by_label(method, exact=True).uncheck()
    page.locator("#compare-eval").scroll_into_view_if_needed()
    page.locator("input[aria-label='questions (0 = all)']").fill("2")
    page.locator("#compare-eval").click()
    page.wait_for_function("(id) => document.querySelectorAll(`#${id} [aria-roledescription=\"axis\"]`).length >= 2",
                           arg="compare-eval-chart", timeout=300_000)
    labels = page.evaluate(AXES_JS, "compare-eval-chart")
    x = next(a for a in labels if a.startswith("X-axis"))
    y = next(a for a in labels if a.startswith("Y-axis"))
    assert f"{4 * len(methods)} values" in x, labels  # every (metric, method) has its own bar: nothing stacked
    assert re.search(r"from 0(\.0)? to 1(\.0)?$", y), labels
    # Nothing the chart draws (labels, titles, a legend) spills out of its box, where it would be cut off.
    chart_box = page.locator("#compare-eval-chart").bounding_box()
    drawn = page.locator("#compare-eval-chart svg.marks").bounding_box()
    assert drawn["y"] + drawn["height"] <= chart_box["y"] + chart_box["height"] + 1, (drawn, chart_box)
    assert ".json" in page.locator("#compare-eval-files").inner_text()

    page.reload()  # the export stays in the workspace and is listed again
    page.wait_for_function("() => document.querySelector('#compare-eval-files')?.innerText.includes('.csv')",
                           timeout=30_000)
    page.close()
