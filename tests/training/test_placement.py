"""Placement and the fair queue on declared inventories: which job starts where and when, and why the others wait.

Pure functions, no process is started here (but for `jobs plan`, which reads real configs and runs nothing).
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import yaml

from lab.core.settings import REPO_ROOT
from lab.training.configs.sft import SftConfig
from lab.training.jobs.command import launch_argv
from lab.training.jobs.inventory import GB, Device, cpu_slots, load_inventory, pinned_argv, with_holdings
from lab.training.jobs.placement import JobRequest, PlacementConfig, estimate_job_bytes, fair_order, job_size, plan
from support import tiny_job_yaml


def inventory(tmp_path, count: int = 8, memory_gb: float = 80) -> list[Device]:
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"devices": [{"name": f"cuda:{i}", "memory_gb": memory_gb} for i in range(count)]}))
    return load_inventory(path)


def job(name: str, gpus: int = 1, gb: float | None = 10, owner: str = "team", at: float | None = None) -> JobRequest:
    return JobRequest(name, owner, at if at is not None else 0.0, gpus, None if gb is None else int(gb * GB))


def check_waves(placements: list, requests: list[JobRequest], devices: list[Device]) -> None:
    """What any plan must respect: a job gets exactly the devices it asked for, each with room for its estimate,
    and no device runs two jobs in one wave (one job per GPU)."""
    memory = {d.name: d.total_bytes for d in devices}
    asked = {r.id: r for r in requests}
    used = Counter((p.wave, name) for p in placements if p.wave is not None for name in p.devices)
    assert max(used.values()) == 1
    for place in placements:
        if place.wave is not None:
            assert len(place.devices) == asked[place.job].devices
            assert all(memory[name] >= (asked[place.job].estimate_bytes or 0) for name in place.devices)


def test_a_teams_queue_lands_in_waves_on_eight_80gb_gpus(tmp_path):
    devices = inventory(tmp_path)
    assert [d.name for d in devices] == [f"cuda:{i}" for i in range(8)] and devices[0].total_bytes == 80 * GB
    queue = [job("fsdp-a", 4, 60, at=1), job("fsdp-b", 4, 70, at=2), job("lora-c", 1, 20, at=3),
             job("ddp-d", 8, 40, at=4), job("lora-e", 2, 30, at=5)]
    placements = plan(queue, devices)
    check_waves(placements, queue, devices)
    waves = {p.job: p.wave for p in placements}
    # The two 4-GPU jobs fill the box; the small ones fill the next wave while the 8-GPU job needs all of it.
    assert waves == {"fsdp-a": 0, "fsdp-b": 0, "lora-c": 1, "lora-e": 1, "ddp-d": 2}
    assert [p.position for p in placements] == [1, 2, 3, 4, 5]  # one owner: the order they were queued in
    reasons = {p.job: p.reason for p in placements}
    assert reasons["fsdp-a"] == "" and "waiting for 8 GPUs with 40.0 GB free" in reasons["ddp-d"]
    assert "wave 2" in reasons["ddp-d"]


def test_a_job_that_can_never_fit_says_why(tmp_path):
    devices = inventory(tmp_path)
    placements = {p.job: p for p in plan([job("too-many", 16), job("too-big", 1, 100), job("fine")], devices)}
    assert placements["too-many"].wave is None and "needs 16 GPUs" in placements["too-many"].reason
    assert placements["too-big"].wave is None and "the largest has 80.0 GB" in placements["too-big"].reason
    assert placements["fine"].wave == 0


def test_owners_take_turns_so_a_sweep_does_not_starve_a_single_job(tmp_path):
    sweep = [job(f"alice-{n}", owner="alice", at=n) for n in range(20)]
    bob = job("bob-0", owner="bob", at=100)  # queued after the whole sweep
    order = [r.id for r in fair_order([*sweep, bob])]
    assert order[:3] == ["alice-0", "bob-0", "alice-1"]
    assert order.index("alice-19") == 20
    # On 8 GPUs bob's job starts in the first wave, not the third.
    placements = {p.job: p for p in plan([*sweep, bob], inventory(tmp_path))}
    assert placements["bob-0"].wave == 0 and placements["bob-0"].position == 2
    assert sum(p.wave == 0 for p in placements.values()) == 8
    # Jobs already running count as turns taken: with two of alice's running, bob goes first.
    assert fair_order([*sweep, bob], running={"alice": 2})[0].id == "bob-0"


def test_priority_owners_go_first_and_take_turns_among_themselves():
    queue = [job("a1", owner="alice", at=1), job("a2", owner="alice", at=2), job("c1", owner="carol", at=3),
             job("d1", owner="dave", at=4), job("c2", owner="carol", at=5)]
    assert [r.id for r in fair_order(queue, config=PlacementConfig(frozenset({"carol", "dave"})))] == [
        "c1", "d1", "c2", "a1", "a2"]
    assert [r.id for r in fair_order(queue)] == ["a1", "c1", "d1", "a2", "c2"]


def test_backfill_lets_small_jobs_past_a_big_one_unless_turned_off(tmp_path):
    devices = inventory(tmp_path)
    busy = with_holdings(devices, {"running-job": (["cuda:0", "cuda:1", "cuda:2", "cuda:3"], 50 * GB)})
    queue = [job("big", 8, at=1), job("small", 1, at=2)]
    placed = {p.job: p for p in plan(queue, busy)}
    assert placed["small"].wave == 0 and placed["big"].wave == 1
    assert not set(placed["small"].devices) & {"cuda:0", "cuda:1", "cuda:2", "cuda:3"}
    strict = {p.job: p for p in plan(queue, busy, PlacementConfig(backfill=False))}
    assert strict["big"].wave == 1 and strict["small"].wave >= 1


def test_holdings_take_memory_and_jobs_share_a_gpu_only_when_allowed(tmp_path):
    devices = inventory(tmp_path, count=1)
    held = with_holdings(devices, {"j1": (["cuda:0"], 30 * GB)})
    assert held[0].holds == ("j1",) and held[0].free_bytes == 50 * GB
    # One job per GPU by default; with two allowed, memory decides.
    assert plan([job("fits", 1, 40)], held)[0].wave == 1
    two = PlacementConfig(jobs_per_gpu=2)
    assert plan([job("fits", 1, 40)], held, two)[0].wave == 0
    waiting = plan([job("too-big-now", 1, 60)], held, two)[0]
    assert waiting.wave == 1 and "with 60.0 GB free" in waiting.reason
    # Memory another process holds (what mem_get_info does not see free) counts too; idle inference entries the
    # arbiter can unload count as free.
    seen = [Device("cuda:0", 80 * GB, 20 * GB)]
    assert with_holdings(seen, {})[0].free_bytes == 20 * GB
    assert with_holdings(seen, {}, {"cuda:0": (["model x"], 30 * GB)})[0].free_bytes == 50 * GB


def test_cpu_slots_take_one_job_each():
    slots = with_holdings(cpu_slots(2), {"running": (["cpu:0"], 0)})
    placed = plan([job("next", gb=None, at=1), job("after", gb=None, at=2)], slots)
    assert [(p.wave, p.devices) for p in placed] == [(0, ("cpu:1",)), (1, ("cpu:0",))]
    assert "free CPU job slot (2 of 2 in use" in placed[1].reason


def test_declared_inventory_errors_name_the_entry(tmp_path):
    path = tmp_path / "bad.yaml"
    for devices, expected in (([{"name": "gpu0", "memory_gb": 8}], "entry 1: name must look like cuda:0"),
                              ([{"name": "cuda:0", "memory_gb": 8}, {"name": "cuda:1", "memory_gb": -1}],
                               re.escape("entry 2 (cuda:1): memory_gb must be a number > 0")),
                              ([{"name": "cuda:0", "memory_gb": 8, "slots": 2}], "entry 1 must be a mapping"),
                              ([], "non-empty list")):
        path.write_text(yaml.safe_dump({"devices": devices}))
        with pytest.raises(ValueError, match=expected):
            load_inventory(path)


@pytest.mark.parametrize("name", ["ddp_gpu", "fsdp", "deepspeed_zero2"])
def test_a_job_asks_for_its_accelerate_configs_processes(tmp_path, name):
    data = yaml.safe_load((REPO_ROOT / "assets" / "accelerate" / f"{name}.yaml").read_text())
    processes, sharded = data["num_processes"], data["distributed_type"] in ("FSDP", "DEEPSPEED")
    cfg = SftConfig(model_id="embedded", datasets=[{"path": "x.jsonl", "format": "qa"}], accelerate_config=name)
    total = 9 * GB
    devices, per_device = job_size(cfg, total, gpu=True)
    assert devices == processes
    assert per_device == (-(-total // processes) if sharded else total)  # sharded state is split, a DDP copy is not
    assert job_size(cfg, total, gpu=False) == (1, total)  # a CPU slot takes the whole job
    assert job_size(cfg, 0, gpu=True)[1] is None  # the model is not on disk: unknown
    # Pinned to three GPUs, the launch says so (overriding the config file's own count).
    argv = pinned_argv(launch_argv(cfg, tmp_path / "config.yaml", cuda=True), ["cuda:1", "cuda:2", "cuda:5"])
    assert argv[argv.index("--num_processes") + 1] == "3" and "--config_file" in argv


def test_cpu_slots_split_the_cores_between_jobs(tmp_path):
    cfg = SftConfig(model_id="embedded", datasets=[{"path": "x.jsonl", "format": "qa"}])
    argv = launch_argv(cfg, tmp_path / "config.yaml", cuda=False)
    threads = int(argv[argv.index("--num_cpu_threads_per_process") + 1])
    pinned = pinned_argv(argv, ["cpu:1"], cpu_slots=2)
    assert pinned[pinned.index("--num_cpu_threads_per_process") + 1] == str(max(1, threads // 2))


def test_jobs_plan_prints_placements_and_runs_nothing(tmp_path, tiny_model_dir, capsys, monkeypatch):
    from lab.cli import main as lab_main
    from lab.training.configs import load_config
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "what is the capital ?", "answer": "paris"}) + "\n")
    configs = []
    for n, extra in enumerate(("", "accelerate_config: ddp_gpu\n", "")):
        path = tmp_path / f"job{n}.yaml"
        path.write_text(tiny_job_yaml(tiny_model_dir, qa, f"plan-{n}") + extra)
        configs.append(str(path))
    (tmp_path / "two.yaml").write_text("devices:\n- {name: cuda:0, memory_gb: 1}\n- {name: cuda:1, memory_gb: 1}\n")
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LAB_DATA_DIR", str(data_dir))
    assert lab_main(["jobs", "plan", "--inventory", str(tmp_path / "two.yaml"), "--json", *configs]) == 0
    rows = json.loads(capsys.readouterr().out)["placements"]
    assert [r["config"] for r in rows] == configs
    # The 2-GPU job waits for both GPUs; the single-GPU job queued after it starts now on the one left.
    assert [(r["wave"], r["devices"]) for r in rows] == [(0, ["cuda:0"]), (1, ["cuda:0", "cuda:1"]), (0, ["cuda:1"])]
    expected = estimate_job_bytes(load_config(configs[0]), data_dir)
    assert expected > 0 and rows[0]["estimate_gb"] == round(expected / GB, 3)
    assert not (data_dir / "jobs").exists() or not any((data_dir / "jobs").iterdir())
