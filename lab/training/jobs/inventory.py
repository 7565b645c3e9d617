"""The devices training jobs may use and what each holds: the inventory placement works from.

    python -c "from lab.training.jobs.inventory import machine_devices; print(machine_devices(1))"

Two sources. The machine itself (`machine_devices`): every CUDA device with its total and free memory from
torch.cuda.mem_get_info, or, without a GPU, LAB_CPU_JOB_SLOTS job slots 'cpu:0', 'cpu:1', ... (the slots share
the cores and the RAM, which the session manager's budget counts). And a declared inventory for planning a
box this one is not (`load_inventory`), a YAML file such as

    devices: [{name: cuda:0, memory_gb: 80}, {name: cuda:1, memory_gb: 80}]

`with_holdings` then takes away what running jobs hold (`running_holdings` reads that from their status), so a
device's free memory is what a new job may use; `visible_devices` and `pinned_argv` pin a job to its devices.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab.training.jobs.status import ACTIVE_STATES

GB = 2**30
"""A GB here is 2**30 bytes, the unit nvidia-smi and torch report GPU memory in (an '80 GB' A100 has 80 of them)."""

_DEVICE_NAME = re.compile(r"^(cuda|cpu):\d+$")


@dataclass(frozen=True)
class Device:
    name: str
    """'cuda:<index>' (the index as this process sees it) or 'cpu:<n>', one CPU job slot."""
    total_bytes: int | None
    """The device's memory; None for a CPU slot, whose RAM the slots share (the session manager's budget counts it)."""
    free_bytes: int | None
    """Memory a new job may use on it now; None for a CPU slot."""
    holds: tuple[str, ...] = ()
    """What is on it: the ids of the jobs placed there, then 'serving: <label>' for inference entries of this process."""
    jobs: int = 0
    """How many of `holds` are training jobs (placement counts them against the jobs a device takes at once)."""

    @property
    def is_gpu(self) -> bool:
        return self.name.startswith("cuda:")


def cpu_slots(count: int) -> list[Device]:
    """`count` CPU job slots (LAB_CPU_JOB_SLOTS)."""
    return [Device(f"cpu:{i}", None, None) for i in range(count)]


def cuda_devices() -> list[Device]:
    """Every CUDA device this process sees, with its memory now (free counts other processes' use too)."""
    import torch  # only here: reading a declared inventory must not load torch
    devices = []
    # mem_get_info opens a CUDA context on each device it asks about (a few hundred MB each, once per process);
    # NVML would not, but pynvml is not among the lab's packages.
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        devices.append(Device(f"cuda:{index}", int(total), int(free)))
    return devices


def machine_devices(slots: int = 1) -> list[Device]:
    """The devices of this machine: its GPUs when it has any, else its CPU job slots."""
    import torch
    return cuda_devices() if torch.cuda.is_available() else cpu_slots(slots)


def load_inventory(path: str | Path) -> list[Device]:
    """A declared inventory (YAML `devices: [{name: cuda:0, memory_gb: 80}, ...]`), every device empty.
    Errors name the file, the entry and the key."""
    where = f"inventory {str(path)!r}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{where} cannot be read as YAML: {exc}") from None
    entries = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where} needs a non-empty list `devices: [{{name: cuda:0, memory_gb: 80}}, ...]`")
    devices: list[Device] = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or set(entry) - {"name", "memory_gb"}:
            raise ValueError(f"{where} entry {i} must be a mapping with name and memory_gb (only), got {entry!r}")
        name, memory = entry.get("name"), entry.get("memory_gb")
        if not isinstance(name, str) or not _DEVICE_NAME.match(name):
            raise ValueError(f"{where} entry {i}: name must look like cuda:0 or cpu:0, got {name!r}")
        if any(d.name == name for d in devices):
            raise ValueError(f"{where} entry {i}: {name} is listed twice")
        if name.startswith("cpu:"):
            devices.append(Device(name, None, None))
            continue
        if isinstance(memory, bool) or not isinstance(memory, (int, float)) or not 0 < memory < float("inf"):
            raise ValueError(f"{where} entry {i} ({name}): memory_gb must be a number > 0, got {memory!r}")
        devices.append(Device(name, int(memory * GB), int(memory * GB)))
    if len({d.is_gpu for d in devices}) > 1:
        raise ValueError(f"{where} mixes GPUs and CPU slots; a job runs on one kind, so declare one kind")
    return devices


def with_holdings(devices: list[Device], jobs: dict[str, tuple[list[str], int]],
                  serving: dict[str, tuple[list[str], int]] | None = None) -> list[Device]:
    """The devices with what running jobs and inference entries hold on them.

    jobs: job id -> (device names, estimated bytes per device). A job's memory is taken from the device's total
    as well as from what mem_get_info saw free, and the smaller is kept: just after a job starts it has not yet
    allocated what it will, and later the measured free memory is the better figure. serving: device name ->
    (labels, bytes the arbiter could evict there); those bytes count as free, since a job starting on that device
    has them evicted first (lab/training/jobs/runner.py).
    """
    serving = serving or {}
    result = []
    for device in devices:
        mine = [(job_id, nbytes) for job_id, (names, nbytes) in jobs.items() if device.name in names]
        labels, reclaimable = serving.get(device.name, ([], 0))
        free = device.free_bytes
        if free is not None:
            free = min(free + reclaimable, device.total_bytes - sum(nbytes for _, nbytes in mine))
        result.append(dataclasses.replace(device, free_bytes=free, jobs=len(mine),
                                          holds=(*(job_id for job_id, _ in mine),
                                                 *(f"serving: {label}" for label in labels))))
    return result


def visible_devices(names: list[str]) -> str:
    """CUDA_VISIBLE_DEVICES for a job pinned to `names` (cuda:<i>, as this process numbers them). When this process
    itself sees only some GPUs (its own CUDA_VISIBLE_DEVICES), index i is the i-th of those, not GPU i."""
    indices = [int(name.partition(":")[2]) for name in names]
    own = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return ",".join(own[i] if own else str(i) for i in indices)


def pinned_argv(argv: list[str], devices: list[str], cpu_slots: int = 1) -> list[str]:
    """The launch command with accelerate's own flags for where it runs: on GPUs --num_processes = its GPUs (after
    --config_file, which it overrides); on CPU slots each job's share of the cores, so jobs do not oversubscribe."""
    if len(argv) < 2 or argv[1] != "launch":  # not an accelerate launch (a test's stand-in command)
        return argv
    argv = list(argv)
    gpu = bool(devices) and devices[0].startswith("cuda:")
    flag, value = ("--num_processes", str(len(devices))) if gpu else ("--num_cpu_threads_per_process", None)
    if flag in argv:
        at = argv.index(flag) + 1
        argv[at] = value or str(max(1, int(argv[at]) // cpu_slots))
    elif value:
        argv[2:2] = [flag, value]
    return argv


def running_holdings(jobs: list[dict[str, Any]], devices: list[Device],
              bytes_of: Callable[[dict[str, Any]], int]) -> dict[str, tuple[list[str], int]]:
    """job id -> (device names, bytes per device) of every running job, for inventory.with_holdings."""
    held = {j["id"]: (list(j["devices"]), bytes_of(j)) for j in jobs if j["state"] in ACTIVE_STATES and j["devices"]}
    taken = {name for names, _ in held.values() for name in names}
    # A job no runner placed (a foreground `python -m lab train`, or one started before placement existed) holds
    # a device all the same: the first GPU, where a plain process runs, or the first CPU slot still free.
    for job in (j for j in jobs if j["state"] in ACTIVE_STATES and not j["devices"] and devices):
        spare = [d.name for d in devices if d.name not in taken] or [devices[0].name]
        name = devices[0].name if devices[0].is_gpu else spare[0]
        held[job["id"]] = ([name], bytes_of(job))
        taken.add(name)
    return held
