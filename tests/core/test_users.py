"""Users: workspaces keep uploads private, only a job's owner may change it, names cannot escape."""

from __future__ import annotations

import pytest
from gradio_client import Client

from lab.core.settings import LabSettings
from lab.core.users import (
    check_job_owner,
    check_name,
    latest_upload,
    list_uploads,
    load_users,
    save_upload,
    upload_path,
    user_of,
)
from lab.training.configs import load_config
from lab.training.jobs.runner import create_job


@pytest.fixture
def settings(tmp_path):
    return LabSettings(data_dir=tmp_path / "data", auth="alice:a1,bob:b2")


@pytest.mark.parametrize("name", ["../bob", "a/b", "..", ".hidden", "", "x" * 200, "bob/../../etc"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ValueError, match="not allowed"):
        check_name(name, "File name")


def test_uploads_are_private_to_their_owner(settings, tmp_path):
    source = tmp_path / "secret.md"
    source.write_text("bob's notes")
    save_upload(settings, "bob", source)
    assert list_uploads(settings, "bob") == ["secret.md"] and list_uploads(settings, "alice") == []
    assert upload_path(settings, "bob", "secret.md").read_text() == "bob's notes"
    with pytest.raises(ValueError, match="no upload named"):
        upload_path(settings, "alice", "secret.md")
    with pytest.raises(ValueError, match="not allowed"):
        upload_path(settings, "alice", "../../bob/uploads/secret.md")
    with pytest.raises(ValueError, match="not allowed"):
        save_upload(settings, "alice", source, name="../bob/uploads/evil.md")


def test_the_latest_upload_is_the_one_saved_last_not_the_first_by_name(settings, tmp_path):
    assert latest_upload(settings, "bob") is None
    for name in ("river.md", "atlas.md", "zebra.md", "river.md"):  # saving a name again makes it the latest
        (tmp_path / name).write_text(f"notes in {name}")
        save_upload(settings, "bob", tmp_path / name)
    assert list_uploads(settings, "bob") == ["atlas.md", "river.md", "zebra.md"]
    assert latest_upload(settings, "bob") == "river.md"
    assert latest_upload(settings, "alice") is None


def test_only_the_owner_may_change_a_job():
    status = {"id": "job-1", "owner": "bob"}
    with pytest.raises(PermissionError, match="belongs to bob"):
        check_job_owner(status, "alice", "stop")
    check_job_owner(status, "bob", "stop")
    check_job_owner({"id": "old"}, "local", "stop")  # jobs from before sign-in belong to the local user
    check_job_owner(status, "carol", "kill", admins={"carol"})  # LAB_ADMINS manage everyone's jobs
    with pytest.raises(PermissionError, match="belongs to bob"):
        check_job_owner(status, "alice", "stop", admins={"carol"})


def test_users_file_and_env_are_merged(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# team\ncarol:c3\n")
    assert load_users(LabSettings(data_dir=tmp_path, auth="alice:a1", users_file=str(users))) == [
        ("alice", "a1"), ("carol", "c3")]
    users.write_text("broken-line\n")
    with pytest.raises(ValueError, match="line 1"):
        load_users(LabSettings(data_dir=tmp_path, users_file=str(users)))
    with pytest.raises(ValueError, match="'local' is reserved"):  # the name of the unconfined shell user
        load_users(LabSettings(data_dir=tmp_path, auth="local:x"))
    assert user_of(None) == "local"


@pytest.mark.slow
def test_sign_in_isolates_users_through_the_ui_api(tiny_model_dir, tmp_path):
    from lab.core.device import choose_device
    from lab.core.settings import REPO_ROOT
    from lab.engine import Engine
    from support import launch_app
    engine = Engine(LabSettings(data_dir=tmp_path / "data", model_id=str(tiny_model_dir), memory_budget_gb=1.0,
                                auth="alice:a1,bob:b2"), device=choose_device(False, False))
    secret = tmp_path / "secret.md"
    secret.write_text("Bob's private notes about the capital of France.")
    save_upload(engine.settings, "bob", secret)
    cfg = load_config(REPO_ROOT / "assets" / "presets" / "sft_lora_qa.yaml")
    bob_job = create_job(cfg, engine.settings.data_dir, owner="bob")
    engine.jobs.runner.max_running = 0  # keep the job queued: this test is about who may touch it
    demo, url = launch_app(engine)
    try:
        alice = Client(url, auth=("alice", "a1"), verbose=False)
        for saved, message in (("secret.md", "no upload named"), ("../bob/uploads/secret.md", "not allowed")):
            with pytest.raises(Exception, match=message):
                alice.predict("my uploads", None, saved, api_name="/compare_document")
        with pytest.raises(Exception, match="belongs to bob"):
            alice.predict(bob_job, api_name="/train_stop")
        with pytest.raises(Exception, match="Job id .* is not allowed"):
            alice.predict("../../etc", api_name="/train_stop")
        bob = Client(url, auth=("bob", "b2"), verbose=False)
        info, _ = bob.predict("my uploads", None, "secret.md", api_name="/compare_document")
        assert "secret.md" in info
        message, *_ = bob.predict(bob_job, api_name="/train_kill")
        assert bob_job in message
    finally:
        demo.close()
