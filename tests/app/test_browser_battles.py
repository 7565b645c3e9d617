"""Browser: one battle in the Battles tab: two anonymous answers, a vote, the names revealed, the leaderboard
row, and the battle reopened from the History tab.

    .venv/bin/python -m pytest -q tests/app/test_browser_battles.py
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOC = "the capital of france is paris . paris is a city on a river .\n"


def base_against_full(browser, app, tmp_path, document: str, reserve: str):
    """A page on the Battles tab set up for the base model against full context on `document`, one of the local
    user's uploads, with `reserve` tokens kept beside the document (the tiny model's window is only 256)."""
    notes = tmp_path / document
    notes.write_text(DOC)
    app.engine.uploads.save("local", notes)  # one of the local user's uploads, as the Compare tab keeps them
    wanted = {app.engine.settings.model_id, "full"}
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    page.goto(app.url)
    page.get_by_role("tab", name="Battles").click()
    # Opening the tab fills in this user's pool and uploads, then the leaderboard: wait for all of it to land.
    page.locator("#battle-notice").get_by_text("vote").first.wait_for(timeout=60_000)
    pool = page.locator("#battle-pool")
    for box in pool.get_by_role("checkbox").all():
        label = box.evaluate("el => el.closest('label').innerText.trim()")
        if (label in wanted) != box.is_checked():
            box.click()
    page.get_by_label("Document (for rag, cag and full)").click()
    page.get_by_role("option", name=document).click()
    page.get_by_text("Settings (the same for both contestants)").click()
    page.locator("#battle-max-new input").fill("8")
    page.locator("#battle-reserve input").fill(reserve)
    page.locator("#battle-prompt textarea").fill("what is the capital of france ?")
    return page


def test_one_battle_vote_reveal_and_leaderboard(browser, tiny_app, tmp_path):
    base = tiny_app.engine.settings.model_id
    page = base_against_full(browser, tiny_app, tmp_path, "battle-notes.md", reserve="48")
    page.locator("#battle-start").click()
    page.locator("#battle-status").get_by_text("Which answer is better?").wait_for(timeout=120_000)
    assert page.get_by_label("Model A").is_visible() and page.get_by_label("Model B").is_visible()
    assert page.locator("#battle-reveal").inner_text().strip() == ""  # nobody is named before the vote
    assert "could not answer" not in page.locator("#battle-a").inner_text() + page.locator("#battle-b").inner_text()
    assert page.locator("#battle-discard").is_enabled()  # a battle may be dropped instead of judged

    page.get_by_role("button", name="A is better").click()
    reveal = page.locator("#battle-reveal")
    reveal.get_by_text("Model A was").wait_for(timeout=60_000)
    shown = reveal.inner_text()
    assert "full on battle-notes.md" in shown and base in shown and "your vote: A is better" in shown
    assert page.get_by_role("button", name="A is better").is_disabled()  # one vote per battle
    assert page.locator("#battle-discard").is_disabled()

    board = page.locator("#battle-leaderboard")
    board.get_by_text("full on battle-notes.md").wait_for(timeout=60_000)
    winner = shown.split("Model A was")[1].split("·")[0].strip()
    loser = shown.split("Model B was")[1].split("·")[0].strip()
    table = board.inner_text()
    assert table.index(winner) < table.index(loser)  # the one vote's winner is listed first
    assert "Fewer than 10 votes" in page.locator("#battle-notice").inner_text()

    page.get_by_role("tab", name="History").click()
    page.wait_for_function("() => document.querySelector('#history-list')?.innerText"
                           ".includes('what is the capital of france ?')", timeout=30_000)
    page.locator("#history-open").click()
    record = page.locator("#history-record")
    record.get_by_text("your vote").wait_for(timeout=30_000)
    assert "full on battle-notes.md" in record.inner_text() and "hidden until you vote" not in record.inner_text()
    page.screenshot(path=str(tmp_path / "battles.png"), full_page=True)
    page.close()


def test_a_battle_whose_side_failed_cannot_be_voted_on_only_discarded(browser, tiny_app, tmp_path):
    # 256 tokens kept beside the document leave no room in the tiny model's window: full context fails.
    page = base_against_full(browser, tiny_app, tmp_path, "battle-too-long.md", reserve="256")
    votes_before = tiny_app.engine.battles.ratings().total_votes
    kept_before = len(tiny_app.engine.history.items("local", kinds=["battle"]))
    page.locator("#battle-start").click()
    status = page.locator("#battle-status")
    status.get_by_text("could not answer, so this battle cannot be voted on").wait_for(timeout=120_000)
    answers = page.locator("#battle-a textarea").input_value() + page.locator("#battle-b textarea").input_value()
    assert "⚠️ This contestant could not answer" in answers  # the failed side says so, without naming itself
    for name in ("A is better", "B is better", "A tie", "Both are bad"):
        assert page.get_by_role("button", name=name).is_disabled(), name
    assert page.locator("#battle-reveal").inner_text().strip() == ""

    page.locator("#battle-discard").click()
    reveal = page.locator("#battle-reveal")
    reveal.get_by_text("no vote was recorded").wait_for(timeout=60_000)
    assert "full on battle-too-long.md" in reveal.inner_text() and "too long" in reveal.inner_text()
    assert page.locator("#battle-discard").is_disabled()
    assert tiny_app.engine.battles.ratings().total_votes == votes_before
    assert len(tiny_app.engine.history.items("local", kinds=["battle"])) == kept_before  # nor kept in History
    page.close()
