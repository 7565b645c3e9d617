"""Browser: two users signed in at once chat in the Arena; each sees only their own history."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def sign_in(browser, url: str, user: str, password: str):
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Arena").wait_for(timeout=30_000)
    return context, page


def wait_answered(page, prompt: str) -> None:
    """Both columns hold this prompt and the last column has finished streaming."""
    page.wait_for_function("""(prompt) => {
        const last = document.querySelector('#arena-chat-1'), note = document.querySelector('#arena-timings-1');
        return last && last.innerText.includes(prompt) && note.innerText.includes('tok/s')
            && !note.innerText.includes('streaming') && !last.innerText.includes('processing'); }""",
                           arg=prompt, timeout=120_000)


def chat(page, prompt: str) -> None:
    page.locator("#arena-prompt textarea").fill(prompt)
    page.locator("#arena-send").click()
    wait_answered(page, prompt)


def test_two_signed_in_users_keep_separate_arena_histories(browser, tiny_auth_app):
    alice_ctx, alice = sign_in(browser, tiny_auth_app.url, "alice", "a1")
    bob_ctx, bob = sign_in(browser, tiny_auth_app.url, "bob", "b2")
    for page in (alice, bob):
        page.get_by_role("tab", name="Arena").click()
        page.get_by_label("Chat mode (keep each column's history)").check()
    # Both send at the same time; their columns share the model's batching engine underneath.
    # Playwright's sync pages belong to this thread, so the two sends are interleaved here:
    alice.locator("#arena-prompt textarea").fill("alice asks about the river")
    bob.locator("#arena-prompt textarea").fill("bob asks about the city")
    alice.locator("#arena-send").click()
    bob.locator("#arena-send").click()
    wait_answered(alice, "alice asks about the river")
    wait_answered(bob, "bob asks about the city")
    chat(alice, "alice second turn")
    alice_text = alice.locator("#arena-chat-0").inner_text()
    bob_text = bob.locator("#arena-chat-0").inner_text()
    assert "alice asks about the river" in alice_text and "alice second turn" in alice_text
    assert "bob" not in alice_text
    assert "bob asks about the city" in bob_text and "alice" not in bob_text
    for ctx in (alice_ctx, bob_ctx):
        ctx.close()
