"""The names the lab accepts (lab/core/names.py) and the one owner-or-admin rule (lab/core/access.py)."""

from __future__ import annotations

import pytest

from lab.core import names
from lab.core.access import cancel_refusal, owner_refusal
from lab.core.settings import LabSettings

ESCAPES = ["../escape", "..", "a/b", "/etc/passwd", "", "x/../../y", ".hidden", None, 7, "a" * 101]


@pytest.mark.parametrize("check, what", [(names.user_name, "User name"), (names.file_name, "File name"),
                                         (names.job_id, "Job id"), (names.sweep_id, "Sweep id")])
@pytest.mark.parametrize("bad", ESCAPES)
def test_names_that_become_folders_cannot_leave_them(check, what, bad):
    with pytest.raises(ValueError, match=f"^{what} .* is not allowed: use 1-100 letters"):
        check(bad)


@pytest.mark.parametrize("good", ["alice", "qa.jsonl", "20260101-sft-ab12cd", "a" * 100, "v1.2_final-3"])
def test_safe_names_come_back_unchanged(good):
    assert names.user_name(good) == names.file_name(good) == names.job_id(good) == names.sweep_id(good) == good


def test_adapter_names_leave_out_dots_that_peft_reads_as_module_paths():
    assert names.adapter_name("my-adapter_2") == "my-adapter_2"
    for bad in ("my.adapter", "a" * 65, "-lead", "", None):
        with pytest.raises(ValueError, match="^Adapter name .* is not allowed: use 1-64 letters"):
            names.adapter_name(bad)


def test_sweep_names_are_short():
    assert names.sweep_name("lr-grid") == "lr-grid"
    with pytest.raises(ValueError, match="^name 'a.b' is not allowed: use 1-32"):
        names.sweep_name("a.b")
    with pytest.raises(ValueError, match="1-32"):
        names.sweep_name("a" * 33)


def test_hub_ids():
    assert names.is_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct") and names.is_hub_id("gpt2")
    assert not any(names.is_hub_id(bad) for bad in ("a/b/c", "/abs", "a b", "", None))


def test_the_states_that_count_against_the_queue_limit():
    assert set(names.WAITING_OR_ACTIVE_STATES) == {"queued", "running", "stopping"}
    assert not set(names.WAITING_OR_ACTIVE_STATES) & set(names.FINAL_STATES)


def test_one_owner_rule_for_jobs_sweeps_adapters_and_requests(tmp_path):
    assert owner_refusal((), "alice", "alice", "Job j1", "stop") is None
    assert owner_refusal({"carol"}, "carol", "alice", "Job j1", "stop") is None
    assert owner_refusal((), "local", None, "Job old", "stop") is None  # made before sign-in: the local user's
    assert owner_refusal((), "bob", "alice", "Sweep s1", "delete") == \
        "Sweep s1 belongs to alice; only they (or an admin, LAB_ADMINS) can delete it."
    settings = LabSettings(data_dir=tmp_path, auth="alice:a,bob:b", admins="carol")
    assert cancel_refusal(settings, "bob", "alice") == \
        "This request belongs to alice; only they (or an admin, LAB_ADMINS) can cancel it."
    assert cancel_refusal(settings, "carol", "alice") is None
    settings.auth = ""  # without sign-in every request is the one local user's
    assert cancel_refusal(settings, "bob", "alice") is None
