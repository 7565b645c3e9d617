"""A shared box the team can trust, the rest of it: unload, long inputs, `jobs delete`, knowledge caches, typed
model folders, float settings and replacing an upload.

Bob is the attacker, alice the victim, carol an admin (LAB_ADMINS). Each test failed on the code before its fix.

    .venv/bin/python -m pytest -q tests/core/test_trust_more.py
"""

from __future__ import annotations

import json
import shutil

import pytest

from lab.core.settings import LabSettings
from lab.inference.arena import ArenaColumn
from lab.inference.generate import GenerationSettings
from lab.knowledge.compare import CompareConfig
from lab.knowledge.evaluation import QAItem
from lab.training.configs import config_from_dict
from support import make_engine, upload


def sft(**fields):
    base = dict(kind="sft", mode="lora", model_id="embedded", max_steps=2,
                datasets=[{"path": "assets/knowledge/qa.jsonl", "format": "qa"}])
    return config_from_dict(base | fields)


# ---- hole 5: unload --------------------------------------------------------------------------------------------
def test_bob_cannot_unload_and_nobody_unloads_the_model_alices_answer_is_using(lab):
    spec = lab.runtime.spec()
    alice = lab.models.generate("what is the capital of france ?", GenerationSettings(max_new_tokens=40))
    next(alice)  # alice's answer is streaming: her request holds the model and its batching engine
    held, loads = lab.sessions.used_bytes, dict(lab.sessions.load_counts)
    assert loads == {spec.key: 1}

    assert "Only admins (LAB_ADMINS)" in lab.models.unload_refusal("bob")
    with pytest.raises(PermissionError, match="LAB_ADMINS"):
        lab.models.unload(spec.key, "bob")
    with pytest.raises(ValueError, match="in use") as refused:  # carol is an admin, but the model is busy
        lab.models.unload(spec.key, "carol")
    assert spec.model_id in str(refused.value)
    assert lab.sessions.used_bytes == held  # the budget still counts the one copy

    alice.close()
    # Bob's next request shares the same copy: it was never dropped, so it is never loaded twice.
    *_, last = lab.models.generate("the model", GenerationSettings(max_new_tokens=2))
    assert last.done and lab.sessions.load_counts == loads
    assert lab.models.unload_refusal("carol") is None
    assert lab.models.unload(spec.key, "carol")  # idle now: the admin may unload it
    assert lab.sessions.used_bytes == 0


def test_without_sign_in_the_local_user_unloads_idle_entries(tmp_path, tiny_model_dir):
    engine = make_engine(tmp_path / "data", tiny_model_dir, auth="", admins="")
    try:
        engine.models.load()
        assert engine.models.unload_refusal("local") is None
        assert engine.models.unload(engine.runtime.spec().key) and engine.sessions.used_bytes == 0
    finally:
        engine.close()


# ---- long inputs are refused before any model loads -----------------------------------------------------------
def test_a_long_arena_prompt_and_a_long_eval_question_are_refused_before_tokenizing(lab):
    long = "what is the capital of france ? " * 130  # 4,160 characters
    with pytest.raises(ValueError, match="4,160 characters; the limit is 4,000"):
        list(lab.arena.stream(long, [ArenaColumn(lab.settings.model_id)], [[]]))
    items = [QAItem("what is the capital of france ?", "paris", 1), QAItem(long, "paris", 2)]
    with pytest.raises(ValueError, match="line 2.*4,160 characters; the limit is 4,000"):
        lab.knowledge.evaluate(lab.knowledge.bundled_document(), items, "base")
    assert lab.sessions.load_counts == {}  # nothing was loaded, let alone tokenized


# ---- `python -m lab jobs delete` ---------------------------------------------------------------------------------
def test_cli_jobs_delete_removes_a_finished_job(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from lab.cli import main
    data = tmp_path / "data"
    engine = make_engine(data, tiny_model_dir, auth="", admins="")
    try:
        job_id = engine.jobs.submit(sft())
        assert engine.jobs.control("stop", job_id)["state"] == "stopped"
    finally:
        engine.close()
    monkeypatch.setenv("LAB_DATA_DIR", str(data))
    assert main(["jobs", "delete", job_id]) == 0
    assert "deleted" in capsys.readouterr().out
    assert not (data / "jobs" / job_id).exists()
    assert main(["jobs", "delete", job_id]) == 2  # gone: a message, not a traceback
    assert job_id in capsys.readouterr().err


# ---- job configs never read the knowledge caches ------------------------------------------------------------------
def test_a_job_config_may_not_name_a_knowledge_cache(lab):
    cache = lab.settings.subdir("knowledge") / "abcdef" / "rag" / "key1"
    cache.mkdir(parents=True)
    (cache / "chunks.jsonl").write_text(json.dumps({"question": "alice's doc", "answer": "private text"}) + "\n")
    for path in (cache / "chunks.jsonl", cache.parent.parent):
        with pytest.raises(PermissionError, match="outside the folders") as refused:
            lab.jobs.submit(sft(datasets=[{"path": str(path), "format": "qa"}]), "bob")
        message = str(refused.value)
        assert str(path) in message and "users/bob" in message and "adapters" in message
        assert str(lab.settings.data_dir / "knowledge") not in message.split("outside the folders you may use:")[1]
    # The lab's other outputs stay readable: a job's own files and the adapters.
    for name in ("jobs", "adapters"):
        kept = lab.settings.subdir(name) / "shared" / "qa.jsonl"
        kept.parent.mkdir(parents=True)
        kept.write_text(json.dumps({"question": "what ?", "answer": "that"}) + "\n")
        lab.jobs.submit(sft(datasets=[{"path": str(kept), "format": "qa"}]), "bob")
    assert [j["owner"] for j in lab.jobs.all()] == ["bob", "bob"]


def test_a_signed_in_user_may_train_the_labs_default_model_wherever_its_folder_is(lab, tiny_model_dir):
    """The default model (LAB_MODEL, chosen by whoever runs the lab) may be named in Compare, so in a job too, even
    when its folder lies outside the roots a user may name; any other folder there is still refused."""
    qa = lab.datasets.save_qa_pairs("bob", [["what ?", "that"]], "qa")
    lab.jobs.submit(sft(model_id=str(tiny_model_dir), datasets=[{"path": str(qa), "format": "qa"}]), "bob")
    other = tiny_model_dir.parent / "another-model"
    shutil.copytree(tiny_model_dir, other, dirs_exist_ok=True)
    with pytest.raises(PermissionError, match="model_id .* is outside the folders"):
        lab.jobs.submit(sft(model_id=str(other), datasets=[{"path": str(qa), "format": "qa"}]), "bob")


# ---- model folders typed in Compare, Arena, Explain and the Playground -----------------------------------------------
def test_bob_may_not_name_a_model_or_adapter_folder_in_alices_workspace(lab, tiny_model_dir):
    alice_model = lab.settings.data_dir / "users" / "alice" / "uploads" / "model"
    shutil.copytree(tiny_model_dir, alice_model)
    alice_adapter = alice_model.parent / "adapter"
    alice_adapter.mkdir()
    (alice_adapter / "adapter_config.json").write_text("{}")
    default, doc = lab.settings.model_id, lab.knowledge.bundled_document()
    tries = {
        "explain trainable": lambda: lab.explain.trainable_params(str(alice_model), 4, "minimal", user="bob"),
        "explain memory": lambda: lab.explain.training_memory(str(alice_model), "lora", 16, "adamw_torch", 1, 16,
                                                              False, 4, "minimal", user="bob"),
        "arena model": lambda: lab.arena.stream("hi", [ArenaColumn(str(alice_model))], [[]], user="bob"),
        "arena adapter": lambda: lab.arena.stream("hi", [ArenaColumn(f"{default} + adapter {alice_adapter}")], [[]],
                                                  user="bob"),
        "arena ft:": lambda: lab.arena.stream("hi", [ArenaColumn(f"ft:{alice_adapter}")], [[]], user="bob"),
        "compare model": lambda: lab.knowledge.stream_compare(doc, "what ?", "base",
                                                              CompareConfig(model_id=str(alice_model)), user="bob"),
        "compare adapter": lambda: lab.knowledge.stream_compare(doc, "what ?", f"ft:{alice_adapter}", user="bob"),
        "evaluation": lambda: lab.knowledge.evaluate(doc, [QAItem("what ?", "a", 1)], "base",
                                                     CompareConfig(model_id=str(alice_model)), user="bob"),
        "load": lambda: lab.models.load(str(alice_model), user="bob"),
        "playground": lambda: lab.models.generate("hi", model_id=str(alice_model), user="bob"),
    }
    for name, attempt in tries.items():
        with pytest.raises(PermissionError, match="outside the folders") as refused:
            attempt()
        assert "alice" in str(refused.value) and "users/bob" in str(refused.value), name
    assert lab.sessions.load_counts == {}
    # Alice may use her own folder; bob the lab's default model; a Hub id is not a path (here: no Hub to reach).
    assert lab.explain.trainable_params(str(alice_model), 4, "minimal", user="alice").trainable > 0
    assert lab.explain.trainable_params(None, 4, "minimal", user="bob").trainable > 0
    assert lab.explain.trainable_params(default, 4, "minimal", user="bob").trainable > 0
    with pytest.raises(Exception, match="Hub cannot be reached"):
        lab.explain.trainable_params("nobody/nothing", 4, "minimal", user="bob")


# ---- float settings ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0])
def test_memory_budget_must_be_a_finite_positive_number(value):
    with pytest.raises(ValueError, match=r"memory_budget_gb \(LAB_MEMORY_BUDGET_GB\)"):
        LabSettings(memory_budget_gb=value)


@pytest.mark.parametrize("env, raw", [("LAB_MEMORY_BUDGET_GB", "nan"), ("LAB_MEMORY_BUDGET_GB", "inf"),
                                      ("LAB_MAX_UPLOAD_MB", "nan"), ("LAB_WORKSPACE_QUOTA_MB", "-inf"),
                                      ("LAB_KNOWLEDGE_CACHE_GB", "0"), ("LAB_MAX_CONCURRENT", "inf"),
                                      ("LAB_MAX_SWEEP_POINTS", "nan"), ("LAB_MAX_QUEUED_JOBS", "1e400")])
def test_a_bad_number_in_the_environment_names_its_variable(monkeypatch, env, raw):
    monkeypatch.setenv(env, raw)
    with pytest.raises(ValueError, match=env):
        LabSettings()


# ---- replacing an upload over quota --------------------------------------------------------------------------------
def test_a_bigger_upload_under_the_same_name_over_quota_leaves_the_old_file(tmp_path, tiny_model_dir, monkeypatch):
    engine = make_engine(tmp_path / "data", tiny_model_dir, workspace_quota_mb=0.01, max_upload_mb=0.01)
    try:
        old_text = "alice wrote this about paris.\n" * 100  # 3 KB
        kept = upload(engine, "alice", "x.md", old_text, tmp_path)
        upload(engine, "alice", "other.md", "the river of the city.\n" * 200, tmp_path)  # 4.6 KB: 7.6 of 10 KB
        with pytest.raises(PermissionError, match="LAB_WORKSPACE_QUOTA_MB"):
            upload(engine, "alice", "x.md", "a longer version of it.\n" * 300, tmp_path)  # 7.2 KB replaces 3 KB
        assert kept.read_text() == old_text and engine.uploads.open("alice", "x.md").text.strip()
        # A copy that fails halfway (a full disk, say) leaves the old file whole too.
        import lab.core.users as users

        def broken_copy(src, dst):
            dst.write(src.read(100))
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(users.shutil, "copyfileobj", broken_copy)
        with pytest.raises(OSError, match="No space"):
            upload(engine, "alice", "x.md", "short new text.\n", tmp_path)
        assert kept.read_text() == old_text
        assert sorted(p.name for p in kept.parent.iterdir()) == ["other.md", "x.md"]  # no half-written leftovers
    finally:
        engine.close()
