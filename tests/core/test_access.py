"""A shared box the team can trust: paths, ownership and quotas, through the Engine as bob against alice.

Bob is the attacker, alice the victim, carol an admin. Nothing here trains: every refusal happens
before a job is written, and the jobs that must exist stay queued (the runner may start none).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from lab.core.settings import REPO_ROOT
from lab.engine import Engine
from lab.knowledge.disk import enforce_cap
from lab.training.configs import config_from_dict
from support import make_engine, upload

SECRET = "alice-private-4321"


@pytest.fixture
def alice_secret(lab, tmp_path) -> Path:
    row = {"question": "what is alice's pin ?", "answer": SECRET}
    return upload(lab, "alice", "secret.md", json.dumps(row) + "\n", tmp_path)


def sft(**fields):
    base = dict(kind="sft", mode="lora", model_id="embedded", max_steps=2,
                datasets=[{"path": "assets/knowledge/qa.jsonl", "format": "qa"}])
    return config_from_dict(base | fields)


def pretrain(**fields):
    base = dict(kind="pretrain", max_steps=2, max_length=128,
                datasets=[{"path": "assets/knowledge/llm_knowledge_guide.md", "format": "text"}])
    return config_from_dict(base | fields)


def no_jobs_written(engine: Engine) -> bool:
    return engine.jobs.all() == []


# ---- hole 2: job configs point anywhere ------------------------------------------------------------------
@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_dataset_path_at_another_users_upload_is_refused(lab, alice_secret, form):
    typed = str(alice_secret) if form == "absolute" else os.path.relpath(alice_secret, REPO_ROOT)
    if form == "relative":
        assert typed.startswith("..")  # ../../tmp/.../users/alice/uploads/secret.md, relative to the lab's folder
    with pytest.raises(PermissionError) as refused:
        lab.jobs.submit(sft(datasets=[{"path": typed, "format": "qa"}]), "bob")
    message = str(refused.value)
    assert typed in message and "assets" in message and "users/bob" in message and SECRET not in message
    assert no_jobs_written(lab)
    # Alice may train on her own upload; bob on the bundled assets.
    lab.jobs.submit(sft(datasets=[{"path": typed, "format": "qa"}]), "alice")
    lab.jobs.submit(sft(), "bob")
    assert sorted(j["owner"] for j in lab.jobs.all()) == ["alice", "bob"]


def test_eval_dataset_model_folder_and_pretraining_paths_are_refused(lab, alice_secret, tiny_model_dir, tmp_path):
    alice_folder = alice_secret.parent
    # A symlink in bob's own workspace is followed to where it really points.
    bob_link = lab.settings.data_dir / "users" / "bob" / "uploads" / "link.md"
    bob_link.parent.mkdir(parents=True, exist_ok=True)
    bob_link.symlink_to(alice_secret)
    # A model folder outside the roots (the lab's default model, tiny_model_dir here, is always allowed: it is the
    # one Compare answers with, see test_trust_more).
    other_model = tmp_path / "another-model"
    shutil.copytree(tiny_model_dir, other_model)
    cases = {
        "eval_dataset": sft(eval_dataset={"path": str(alice_secret), "format": "qa"}),
        "symlink": sft(datasets=[{"path": str(bob_link), "format": "qa"}]),
        "model_id": sft(model_id=str(other_model)),
        "corpus": pretrain(datasets=[{"path": str(alice_folder), "format": "text"}]),
        "tokenizer": pretrain(tokenizer=str(tiny_model_dir)),
        "reward_model": config_from_dict(dict(
            kind="grpo", max_steps=2, rewards=[], reward_model=str(other_model),
            datasets=[{"path": "assets/knowledge/qa.jsonl", "format": "qa"}])),
    }
    typed = {"eval_dataset": str(alice_secret), "symlink": str(bob_link), "model_id": str(other_model),
             "corpus": str(alice_folder), "tokenizer": str(tiny_model_dir), "reward_model": str(other_model)}
    for name, cfg in cases.items():
        with pytest.raises(PermissionError, match="outside the folders") as refused:
            lab.jobs.submit(cfg, "bob")
        assert typed[name] in str(refused.value), name
    assert no_jobs_written(lab)
    # A model folder inside the lab's own outputs (here <data>/models) is allowed.
    inside = lab.settings.subdir("models") / "tiny"
    inside.symlink_to(other_model)  # resolves outside: still refused
    with pytest.raises(PermissionError):
        lab.jobs.submit(sft(model_id=str(inside)), "bob")
    inside.unlink()
    inside.mkdir()
    (inside / "config.json").write_text("{}")
    lab.jobs.submit(sft(model_id=str(inside)), "bob")


def test_the_local_user_is_the_machines_own_and_is_not_confined(lab, tiny_model_dir):
    # Without sign-in (and from the shell) every request is the local user, who runs as the lab's own user.
    lab.jobs.submit(sft(model_id=str(tiny_model_dir)))
    assert [j["owner"] for j in lab.jobs.all()] == ["local"]
    with pytest.raises(ValueError, match="reserved"):
        make_engine(lab.settings.data_dir, tiny_model_dir, auth="local:x").uploads.sign_in_users()


# ---- hole 1 and 3: sweeps ----------------------------------------------------------------------------------
def test_sweep_base_is_a_preset_never_a_path_and_errors_hold_no_content(lab, alice_secret, tmp_path):
    broken = upload(lab, "alice", "broken.md", f"kind: sft\nnote: [{SECRET}\n  : oops\n", tmp_path)
    for base in (str(alice_secret), str(broken), os.path.relpath(broken, REPO_ROOT), "../.git/config"):
        with pytest.raises(ValueError) as refused:
            lab.sweeps.from_dict({"name": "steal", "base": base, "grid": {"r": [8]}})
        message = str(refused.value)
        assert "sft_lora_qa" in message and "preset" in message and SECRET not in message
    # A YAML error in a file names the file and the place, never a line of it.
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(f"name: x\nbase: sft_lora_qa\ngrid: {{r: [8]}}\nbad: [{SECRET}\n  : oops\n")
    with pytest.raises(ValueError, match=r"sweep.yaml is not valid YAML \(line \d+, column \d+\)") as refused:
        lab.sweeps.load_file(sweep_file)
    assert SECRET not in str(refused.value)
    with pytest.raises(ValueError, match="not valid YAML") as refused:
        lab.jobs.load_config(sweep_file)
    assert SECRET not in str(refused.value)


def test_every_sweep_point_is_checked_like_a_job(lab, alice_secret):
    base = dict(kind="sft", mode="lora", max_steps=2, datasets=[{"path": str(alice_secret), "format": "qa"}])
    sweep = lab.sweeps.from_dict({"name": "inline", "base": base, "grid": {"r": [2, 4]}})
    with pytest.raises(PermissionError, match="outside the folders"):
        lab.sweeps.start(sweep, "bob")
    assert no_jobs_written(lab) and lab.sweeps.all() == []


def test_a_preset_sweep_belongs_to_bob_and_only_he_or_an_admin_may_act_on_it(lab):
    sweep = lab.sweeps.suggest("r", base="sft_lora_qa")
    sweep_id = lab.sweeps.start(sweep, "bob")
    jobs = [row["job_id"] for row in lab.sweeps.results(sweep_id)]
    assert len(jobs) == 3 and {lab.jobs.status(j)["owner"] for j in jobs} == {"bob"}
    with pytest.raises(PermissionError, match="belongs to bob"):
        lab.jobs.control("stop", jobs[0], "alice")
    with pytest.raises(PermissionError, match="belongs to bob"):
        lab.sweeps.resume(sweep_id, "alice")
    with pytest.raises(PermissionError, match="belongs to bob"):
        lab.jobs.control("delete", jobs[0], "alice")
    assert lab.jobs.control("stop", jobs[0], "carol")["state"] == "stopped"  # carol is an admin
    assert lab.jobs.control("kill", jobs[1], "bob")["state"] == "stopped"
    with pytest.raises(ValueError, match="queued"):
        lab.jobs.control("delete", jobs[2], "bob")  # still queued: stop it first
    assert lab.jobs.control("delete", jobs[0], "bob") == {"id": jobs[0], "state": "deleted"}
    assert not (lab.settings.data_dir / "jobs" / jobs[0]).exists()
    assert lab.jobs.control("delete", jobs[1], "carol")["state"] == "deleted"
    assert {j["id"] for j in lab.jobs.all()} == {jobs[2]}


# ---- hole 3 and 6: quotas ------------------------------------------------------------------------------------
def test_sweep_size_and_queued_jobs_are_capped_per_user(tmp_path, tiny_model_dir):
    engine = make_engine(tmp_path / "data", tiny_model_dir, max_sweep_points=2)
    try:
        with pytest.raises(PermissionError, match="3 points.*LAB_MAX_SWEEP_POINTS=2"):
            engine.sweeps.start(engine.sweeps.suggest("r", base="sft_lora_qa"), "bob")
        with pytest.raises(PermissionError, match="LAB_MAX_SWEEP_POINTS"):  # refused before any point is built
            engine.sweeps.from_dict({"name": "huge", "base": "sft_lora_qa",
                                     "grid": {"r": list(range(1, 1001)), "lora_alpha": list(range(1, 1001))}})
        for _ in range(8):
            engine.jobs.submit(sft(), "bob")
        with pytest.raises(PermissionError, match="8 queued or running.*LAB_MAX_QUEUED_JOBS"):
            engine.jobs.submit(sft(), "bob")
        with pytest.raises(PermissionError, match="LAB_MAX_QUEUED_JOBS"):
            engine.sweeps.start(engine.sweeps.from_dict({"name": "two", "base": "sft_lora_qa", "grid": {"r": [2, 4]}}),
                                "bob")
        engine.jobs.submit(sft(), "alice")  # the cap is per user
        assert len(engine.jobs.all()) == 9
    finally:
        engine.close()


def test_uploads_are_capped_private_and_count_against_the_workspace(tmp_path, tiny_model_dir):
    engine = make_engine(tmp_path / "data", tiny_model_dir, workspace_quota_mb=0.01, max_upload_mb=0.005)
    try:
        kept = upload(engine, "bob", "notes.md", "a small note about paris.\n" * 100, tmp_path)  # 2.6 KB
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        for folder in (kept.parent, kept.parent.parent):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        with pytest.raises(PermissionError, match="LAB_MAX_UPLOAD_MB"):
            upload(engine, "bob", "big.md", "x " * 4000, tmp_path)  # 8 KB > 5 KB per file
        for n in range(2):
            upload(engine, "bob", f"more{n}.md", "more words about the river.\n" * 125, tmp_path)  # 3.5 KB each
        with pytest.raises(PermissionError, match="LAB_WORKSPACE_QUOTA_MB"):
            upload(engine, "bob", "last.md", "one more file\n" * 200, tmp_path)
        assert engine.uploads.names("bob") == ["more0.md", "more1.md", "notes.md"]
        upload(engine, "alice", "hers.md", "alice has her own quota.\n" * 100, tmp_path)
        qa = engine.datasets.save_qa_pairs("alice", [["what is it ?", "a test"]], "pairs")
        assert stat.S_IMODE(qa.stat().st_mode) == 0o600
        with pytest.raises(PermissionError, match="LAB_WORKSPACE_QUOTA_MB"):
            engine.datasets.save_qa_pairs("bob", [["what is it ?", "a test " * 200]], "pairs")
        assert not (engine.settings.data_dir / "users" / "bob" / "uploads" / "pairs.jsonl").exists()
    finally:
        engine.close()


def test_knowledge_cache_eviction_keeps_the_newest_within_the_cap(tmp_path, tiny_model_dir):
    engine = make_engine(tmp_path / "data", tiny_model_dir, knowledge_cache_gb=25_000 / 2**30)
    try:
        root = engine.settings.subdir("knowledge")
        entries = []
        for n, (doc, method) in enumerate([("aaaa", "cag"), ("bbbb", "rag"), ("aaaa", "rag"), ("cccc", "cag")]):
            entry = root / doc / method / f"key{n}"
            entry.mkdir(parents=True)
            (entry / "data.bin").write_bytes(b"\0" * 10_000)
            os.utime(entry, (time.time() - 100 + n, time.time() - 100 + n))
            entries.append(entry)
        os.utime(entries[0], None)  # the oldest entry was just used again: it is now the most recent
        enforce_cap(root, keep=entries[3])  # what cag.py and rag.py call after writing entries[3]
        assert [e.exists() for e in entries] == [True, False, False, True]
        assert not (root / "bbbb").exists()  # emptied document folders go too
    finally:
        engine.close()
