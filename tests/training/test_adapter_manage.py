"""Adapters have owners, a description, a new name or none at all on their owner's word; a sweep's adapters are
grouped under it and kept out of Compare's and the Arena's lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from lab.inference.adapters import register_adapter, resolve_adapter
from lab.training.configs import load_config
from support import make_engine, tiny_job_yaml


@pytest.fixture(scope="module")
def lora_output(tmp_path_factory, tiny_model_dir) -> Path:
    """A real peft LoRA adapter of the tiny model, as a finished job leaves it in its output folder."""
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("lora-output")
    model.save_pretrained(out)
    return out


@pytest.fixture
def lab(tmp_path, tiny_model_dir):
    engine = make_engine(tmp_path / "data", tiny_model_dir)
    yield engine
    engine.close()


def register(lab, lora_output, name: str, owner: str | None, job_id: str = "") -> str:
    extra = {"kind": "sft", "mode": "lora", "data": ["qa.jsonl"]} | ({"owner": owner} if owner else {})
    return Path(register_adapter(lora_output, name, lab.settings.model_id, job_id, lab.settings.data_dir,
                                 extra)).name


def test_the_owner_renames_their_adapter_and_every_list_follows(lab, lora_output):
    register(lab, lora_output, "capital-lora", "alice")
    renamed = lab.adapters.rename("capital-lora", "paris-lora", user="alice")
    assert renamed.name == "paris-lora" and renamed.owner == "alice" and renamed.data == ("qa.jsonl",)
    methods = lab.knowledge.compare_methods()
    assert "ft:paris-lora" in methods and "ft:capital-lora" not in methods
    assert any("adapter paris-lora" in choice for choice in lab.arena.choices())
    assert json.loads((renamed.path / "adapter_meta.json").read_text())["name"] == "paris-lora"
    with pytest.raises(ValueError, match="Unknown adapter 'capital-lora'"):
        resolve_adapter(lab.settings.data_dir, "capital-lora")
    assert "qa.jsonl" in lab.adapters.summary(renamed) and "sft lora" in lab.adapters.summary(renamed)


def test_only_the_owner_or_an_admin_may_rename_or_delete(lab, lora_output):
    register(lab, lora_output, "alice-lora", "alice")
    for action in (lambda: lab.adapters.rename("alice-lora", "mine", user="bob"),
                   lambda: lab.adapters.delete("alice-lora", user="bob")):
        with pytest.raises(PermissionError, match="belongs to alice"):
            action()
    assert lab.adapters.names() == ["alice-lora"]  # nothing changed
    lab.adapters.rename("alice-lora", "kept-by-admin", user="carol")  # carol is an admin
    lab.adapters.delete("kept-by-admin", user="alice")
    assert lab.adapters.names() == [] and not any(lab.settings.data_dir.joinpath("adapters").iterdir())


def test_an_adapter_without_a_recorded_owner_belongs_to_its_jobs_owner(lab, lora_output, tiny_model_dir, tmp_path):
    qa = lab.datasets.save_qa_pairs("bob", [["capital of france ?", "paris"]], "qa")  # kept in bob's workspace
    config = tmp_path / "job.yaml"
    config.write_text(tiny_job_yaml(tiny_model_dir, qa, "old-lora"))
    job = lab.jobs.submit(load_config(config), user="bob")
    register(lab, lora_output, "old-lora", None, job_id=job)  # an adapter from before owners were recorded
    with pytest.raises(PermissionError, match="belongs to bob"):
        lab.adapters.delete("old-lora", user="alice")
    lab.adapters.delete("old-lora", user="bob")
    assert lab.adapters.names() == []


@pytest.mark.parametrize("bad", ["", "../escape", "has space", "x" * 65, ".hidden"])
def test_a_bad_new_name_is_refused_and_the_adapter_keeps_its_name(lab, lora_output, bad):
    register(lab, lora_output, "good-lora", "alice")
    with pytest.raises(ValueError, match="not allowed"):
        lab.adapters.rename("good-lora", bad, user="alice")
    assert lab.adapters.names() == ["good-lora"]


def test_a_name_in_use_is_refused_rather_than_overwritten(lab, lora_output):
    register(lab, lora_output, "one", "alice")
    register(lab, lora_output, "two", "alice")
    with pytest.raises(ValueError, match="already exists"):
        lab.adapters.rename("one", "two", user="alice")
    assert lab.adapters.names() == ["one", "two"]


def test_a_sweeps_adapters_are_grouped_under_it_and_left_out_of_compare_and_arena(lab, lora_output):
    sweep = lab.settings.data_dir / "sweeps" / "20261130-120000-rank-ab12"
    sweep.mkdir(parents=True)
    (sweep / "points.json").write_text(json.dumps({"sweep_id": sweep.name, "points": [
        {"index": 0, "job_id": "20261130-120001-sft-aaaaaa"}, {"index": 1, "job_id": "20261130-120002-sft-bbbbbb"}]}))
    register(lab, lora_output, f"{sweep.name}-p0", "alice", job_id="20261130-120001-sft-aaaaaa")
    register(lab, lora_output, f"{sweep.name}-p1", "alice", job_id="20261130-120002-sft-bbbbbb")
    register(lab, lora_output, "on-purpose", "alice", job_id="20261130-130000-sft-cccccc")
    assert lab.adapters.sweeps() == {f"{sweep.name}-p0": sweep.name, f"{sweep.name}-p1": sweep.name}
    assert [m for m in lab.knowledge.compare_methods() if m.startswith("ft:")] == ["ft:on-purpose"]
    assert len([m for m in lab.knowledge.compare_methods(include_sweeps=True) if m.startswith("ft:")]) == 3
    assert [c for c in lab.arena.choices() if "adapter" in c] == [f"{lab.settings.model_id} + adapter on-purpose"]
    # Renamed, a sweep's adapter still belongs to its sweep (found by its job, not by its name).
    lab.adapters.rename(f"{sweep.name}-p1", "best-rank", user="alice")
    assert lab.adapters.sweeps()["best-rank"] == sweep.name


def test_only_the_owner_or_an_admin_may_merge(lab, lora_output):
    """Bob merging Alice's adapter took her merged folder's name, and her own merge then failed."""
    register(lab, lora_output, "alice-lora", "alice")
    with pytest.raises(PermissionError, match="belongs to alice"):
        lab.adapters.merge("alice-lora", user="bob")
    assert not lab.settings.data_dir.joinpath("merged", "alice-lora").exists()
    merged = lab.adapters.merge("alice-lora", user="alice")
    assert (merged / "config.json").exists()
