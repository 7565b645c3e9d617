"""The app served in-process, called through gradio_client by API name (the embedded model)."""

from __future__ import annotations

import pytest
from gradio_client import Client

from lab.core.settings import LabSettings
from lab.engine import Engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(live_app):
    return Client(live_app, verbose=False)


def test_playground_answers_by_api_name(client):
    answer, timings = client.predict("What is the capital of France?", 24, 0.0, "embedded", api_name="/playground")
    assert "Paris" in answer
    assert "time to first token" in timings


@pytest.mark.parametrize("args, message", [
    (("   ", 16, 0.0, "embedded"), "prompt is empty"),
    (("hi", 10**7, 0.0, "embedded"), "max_new_tokens"),
    (("hi", 16, 0.0, "nobody/no-such-model"), "Hub cannot be reached"),
])
def test_bad_input_gives_a_message_and_the_app_keeps_serving(client, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/playground")
    answer, _ = client.predict("Say hello.", 8, 0.0, "embedded", api_name="/playground")
    assert answer.strip()


def test_load_model_reports_size(client):
    status, *_ = client.predict("embedded", False, api_name="/load_model")
    assert "Loaded `embedded`" in status and "MB" in status


def test_unwritable_data_dir_is_reported_in_the_ui(tmp_path):
    from support import launch_app
    blocker = tmp_path / "file"
    blocker.write_text("x")
    engine = Engine(LabSettings(data_dir=blocker / "data", model_id="embedded", memory_budget_gb=1.0, auth=""))
    demo, url = launch_app(engine)
    try:
        c = Client(url, verbose=False)
        with pytest.raises(Exception, match="LAB_DATA_DIR"):
            c.predict("hello", 8, 0.0, "embedded", api_name="/playground")
        assert c.predict("embedded", api_name="/unload_model")[0]  # still serving
    finally:
        demo.close()


def test_sign_in_is_required_when_configured(tiny_model_dir, tmp_path):
    from support import launch_app
    engine = Engine(LabSettings(data_dir=tmp_path, model_id=str(tiny_model_dir), memory_budget_gb=1.0,
                                auth="alice:wonderland"))
    demo, url = launch_app(engine)
    try:
        with pytest.raises(Exception, match="credentials were not provided"):
            Client(url, verbose=False).predict("the model", 2, 0.0, str(tiny_model_dir), api_name="/playground")
        signed_in = Client(url, auth=("alice", "wonderland"), verbose=False)
        answer, timings = signed_in.predict("the model", 2, 0.0, str(tiny_model_dir), api_name="/playground")
        assert "new tokens" in timings
    finally:
        demo.close()


def test_a_slow_first_page_does_not_stop_the_app_starting():
    """Gradio's own check gives up on the first 3-second timeout; the lab asks again until its patience ends."""
    import app
    answers = iter([False, False, True])
    assert app.patient_url_ok(lambda url: next(answers), patience_s=30)("http://127.0.0.1:1/")
    calls = []
    never = app.patient_url_ok(lambda url: calls.append(url) or False, patience_s=0.6)
    assert never("http://127.0.0.1:1/") is False and len(calls) >= 2
