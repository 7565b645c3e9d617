"""Browser: with sign-in on, a user who is not an admin sees the System tab's Unload button disabled and why;
the API refuses them too. Without sign-in the button works.

    .venv/bin/python -m pytest -q tests/app/test_browser_unload.py
"""

from __future__ import annotations

import shutil

import pytest
from gradio_client import Client

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REASON = "Only admins (LAB_ADMINS) can unload while sign-in is on"


def open_tab(browser, url: str, tab: str, user: str | None = None, password: str | None = None):
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    page.goto(url)
    if user:
        page.get_by_label("username").fill(user)
        page.get_by_label("password").fill(password)
        page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name=tab).click()
    return context, page


def test_bob_sees_unload_disabled_with_the_reason_and_the_api_refuses_him(browser, tiny_auth_app):
    tiny_auth_app.engine.models.load()  # something bob could otherwise drop from under alice
    key = tiny_auth_app.engine.runtime.spec().key
    context, page = open_tab(browser, tiny_auth_app.url, "System", "bob", "b2")
    page.locator("#system-unload-note").get_by_text(REASON).wait_for(timeout=30_000)
    assert page.locator("#system-unload").is_disabled()
    context.close()
    client = Client(tiny_auth_app.url, auth=("bob", "b2"), verbose=False)
    with pytest.raises(Exception, match="Only admins"):
        client.predict(key, api_name="/unload_model")
    assert key in [e["key"] for e in tiny_auth_app.engine.devices.stats()["entries"]]  # still loaded, one copy
    assert tiny_auth_app.engine.sessions.load_counts[key] == 1


def test_without_sign_in_the_unload_button_works(browser, tiny_app):
    context, page = open_tab(browser, tiny_app.url, "System")
    button = page.locator("#system-unload")
    # While the page-load event runs, gradio shows its own timer ("0.3s") in the note: wait for the event's answer,
    # an enabled button and an empty note (a refusal would stay in the note and time this out).
    page.wait_for_function("""() => !document.querySelector('#system-unload')?.disabled
        && document.querySelector('#system-unload-note')?.innerText.trim() === ''""", timeout=30_000)
    assert button.is_enabled() and page.locator("#system-unload-note").inner_text().strip() == ""
    context.close()


def test_bob_cannot_read_a_model_folder_in_alices_workspace_from_explain(browser, tiny_auth_app):
    alice_model = tiny_auth_app.engine.settings.data_dir / "users" / "alice" / "uploads" / "explain-model"
    shutil.copytree(tiny_auth_app.model_dir, alice_model, dirs_exist_ok=True)
    seen = {}
    for user, password in (("bob", "b2"), ("alice", "a1")):
        context, page = open_tab(browser, tiny_auth_app.url, "Explain", user, password)
        out = page.locator("#explain-trainable-out")
        out.get_by_text("trainable of").wait_for(timeout=30_000)  # the default model, shown when the tab opens
        page.get_by_label("Model id").first.fill(str(alice_model))
        page.get_by_label("Model id").first.press("Enter")
        page.wait_for_function("""(path) => document.querySelector('#explain-trainable-out').innerText.includes(path)
            || document.querySelector('.toast-body')""", arg=str(alice_model), timeout=30_000)
        seen[user] = (out.inner_text(), page.locator(".toast-body").all_inner_texts())
        context.close()
    bob_out, bob_toasts = seen["bob"]
    assert any("outside the folders" in t and "users/bob" in t for t in bob_toasts), bob_toasts
    assert str(alice_model) not in bob_out
    alice_out, alice_toasts = seen["alice"]
    assert str(alice_model) in alice_out and "trainable of" in alice_out and not alice_toasts
