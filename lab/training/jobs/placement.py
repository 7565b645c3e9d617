"""Which queued job starts where, and when: a device count and a memory estimate per job, a fair order, waves.

    python -m lab jobs plan --inventory inventory.yaml --json assets/presets/sft_lora_qa.yaml

Pure functions over JobRequest and Device (lab/training/jobs/inventory.py). The job runner calls `plan` on every
poll with this machine's devices and starts the jobs of wave 0; `jobs plan` calls it with a declared inventory
and prints every wave. A job asks for as many devices as accelerate will start processes (num_processes of its
accelerate config, 1 without one), each with its memory estimate free. The queue is fair: owners take turns,
so one user's 20-point sweep does not hold back another user's single job.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab.core.settings import EMBEDDED_MODEL
from lab.training.configs.base import TrainConfig
from lab.training.jobs.inventory import GB, Device
from lab.training.jobs.status import ACTIVE_STATES, JobState

SHARDED = ("FSDP", "DEEPSPEED")
"""accelerate distributed types that split the training state over the processes instead of copying it."""


@dataclass(frozen=True)
class PlacementConfig:
    priority_owners: frozenset[str] = frozenset()
    """Owners whose queued jobs go before everyone else's, taking turns among themselves (the app passes
    LAB_ADMINS); empty: every owner is equal."""
    jobs_per_gpu: int = 1
    """Training jobs one GPU takes at once. 1: a job has its GPUs to itself (two jobs on one GPU fight over its
    compute, and a memory estimate is rough). A CPU job slot always takes one job."""
    backfill: bool = True
    """Start a later job that fits now while an earlier one waits for bigger room. Off: jobs start strictly in
    queue order, so a job waiting for many GPUs is never overtaken (at the cost of idle devices meanwhile)."""

    def __post_init__(self) -> None:
        if isinstance(self.jobs_per_gpu, bool) or not isinstance(self.jobs_per_gpu, int) or self.jobs_per_gpu < 1:
            raise ValueError(f"jobs_per_gpu must be a whole number >= 1, got {self.jobs_per_gpu!r}")


@dataclass(frozen=True)
class JobRequest:
    id: str
    """The job's id (or, when planning, the config's place in the list)."""
    owner: str = "local"
    queued_at: float = 0.0
    """When it entered the queue; an owner's jobs go in this order."""
    devices: int = 1
    """Devices it needs at once: accelerate's num_processes on GPUs (one process per GPU); 1 on CPU job slots."""
    estimate_bytes: int | None = None
    """Memory it needs on each of its devices; None when unknown (its model is not on disk yet): it then waits
    for devices that hold nothing else."""


@dataclass(frozen=True)
class Placement:
    job: str
    position: int
    """Its place in the fair queue (1 = first)."""
    wave: int | None
    """0: starts now; n: starts once the jobs of the waves before it have ended; None: never fits these devices."""
    devices: tuple[str, ...] = ()
    """Where it runs in its wave (empty when it never fits)."""
    reason: str = ""
    """Why it does not start now ('' for wave 0): what it waits for, or why it can never start here."""
    estimate_bytes: int | None = None


@dataclass
class _Room:
    """What is left on one device while a wave is being filled."""
    device: Device
    free: int | None
    jobs: int


# ---- what a job asks for ----------------------------------------------------------------------
def accelerate_processes(cfg: TrainConfig) -> tuple[int, bool]:
    """(num_processes, sharded) of the job's accelerate config: (1, False) without one. Sharded (FSDP, DeepSpeed)
    means each process holds only part of the weights, gradients and optimizer state."""
    if cfg.accelerate_config is None:
        return 1, False
    data = yaml.safe_load(cfg.accelerate_config_path.read_text(encoding="utf-8")) or {}
    processes = data.get("num_processes", 1)
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"accelerate_config {cfg.accelerate_config}: num_processes must be a whole number >= 1, "
                         f"got {processes!r}")
    return processes, str(data.get("distributed_type", "NO")).upper() in SHARDED


def job_size(cfg: TrainConfig, estimate_bytes: int, gpu: bool) -> tuple[int, int | None]:
    """(devices, bytes per device) of a job whose whole training state is estimated at `estimate_bytes` (0 =
    unknown). On GPUs accelerate starts one process per device; data parallel copies the estimate to each, while
    FSDP and DeepSpeed split it (roughly: they shard the optimizer state and gradients, which are most of a full
    fine-tune, and FSDP the weights too). On CPU job slots a job takes one slot however many processes it starts."""
    processes, sharded = accelerate_processes(cfg)
    count = processes if gpu else 1
    if estimate_bytes <= 0:
        return count, None
    return count, -(-estimate_bytes // processes) if sharded and gpu else estimate_bytes


MEMORY_FACTORS = {"full": 4.0, "lora": 1.25, "qlora": 0.4}
"""Training memory as a multiple of the weights' size on disk: full = weights + gradients + two Adam moments;
LoRA = frozen weights + small adapters and activations; QLoRA = the same on 4-bit weights (about 1/4 of fp16)."""



def estimate_job_bytes(cfg: TrainConfig, data_dir: str | Path) -> int:
    """Rough training memory from the size of the weights on disk (0 when the model is not local yet)."""
    from lab.inference.models import EMBEDDED_DIRNAME
    folder = (Path(data_dir) / "models" / EMBEDDED_DIRNAME if cfg.model_id == EMBEDDED_MODEL
              else Path(cfg.model_id).expanduser())
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else 0
    return int(weights * MEMORY_FACTORS[cfg.mode])


# ---- the order --------------------------------------------------------------------------------
def fair_order(queued: list[JobRequest], running: Mapping[str, int] | None = None,
               config: PlacementConfig = PlacementConfig()) -> list[JobRequest]:
    """Queued jobs in the order they are offered devices: owners take turns (round-robin), counting the jobs they
    already have running, so an owner with two running jobs waits behind one with none; among equal turns the job
    queued first goes first. Jobs of config.priority_owners come before all others, taking turns among themselves."""
    turns = Counter(running or {})
    keyed = []
    for job in sorted(queued, key=lambda j: (j.queued_at, j.id)):
        keyed.append(((job.owner not in config.priority_owners, turns[job.owner], job.queued_at, job.id), job))
        turns[job.owner] += 1
    return [job for _, job in sorted(keyed, key=lambda pair: pair[0])]


# ---- one wave ---------------------------------------------------------------------------------
def _capacity(device: Device, config: PlacementConfig) -> int:
    return config.jobs_per_gpu if device.is_gpu else 1


def _accepts(room: _Room, job: JobRequest, config: PlacementConfig) -> bool:
    if room.jobs >= _capacity(room.device, config):
        return False
    if room.free is None:  # a CPU slot: RAM is the session manager's budget, not placement's
        return True
    if job.estimate_bytes is None:
        return room.jobs == 0
    return room.free >= job.estimate_bytes


def _device_key(name: str) -> tuple[str, int]:
    kind, _, index = name.partition(":")
    return kind, int(index)


def _take(rooms: list[_Room], job: JobRequest, config: PlacementConfig) -> tuple[str, ...] | None:
    """The devices the job gets, taken out of `rooms`; None when fewer than it needs accept it. Best fit: the
    devices with the least room that still fits, so the roomiest stay free for bigger jobs."""
    fitting = [r for r in rooms if _accepts(r, job, config)]
    if len(fitting) < job.devices:
        return None
    chosen = sorted(fitting, key=lambda r: (r.free or 0, _device_key(r.device.name)))[:job.devices]
    for room in chosen:
        room.jobs += 1
        if room.free is not None:
            room.free = 0 if job.estimate_bytes is None else room.free - job.estimate_bytes
    return tuple(sorted((r.device.name for r in chosen), key=_device_key))


def _gb(nbytes: int) -> str:
    return f"{nbytes / GB:.1f} GB"


def waiting_reason(job: JobRequest, devices: list[Device]) -> str:
    """What a job that does not fit now waits for, in words."""
    if not any(d.is_gpu for d in devices):
        busy = sum(d.jobs > 0 for d in devices)
        return f"waiting for a free CPU job slot ({busy} of {len(devices)} in use; LAB_CPU_JOB_SLOTS sets how many)"
    gpus = f"{job.devices} GPU{'s' if job.devices > 1 else ''}"
    if job.estimate_bytes is None:
        return f"waiting for {gpus} with nothing else on them (memory estimate unknown: its model is not on disk)"
    return f"waiting for {gpus} with {_gb(job.estimate_bytes)} free"


def _never_reason(job: JobRequest, devices: list[Device]) -> str:
    gpus = [d for d in devices if d.is_gpu]
    if gpus and job.devices > len(gpus):
        return f"needs {job.devices} GPUs (num_processes of its accelerate config); there are {len(gpus)}"
    if not devices:
        return "no devices to run on"
    largest = max(d.total_bytes or 0 for d in gpus) if gpus else 0
    return (f"needs {_gb(job.estimate_bytes or 0)} on each of {job.devices} GPU(s); the largest has {_gb(largest)}: "
            "use mode qlora or lora, gradient checkpointing, or FSDP/DeepSpeed over more GPUs")


# ---- every wave -------------------------------------------------------------------------------
def plan(queued: list[JobRequest], devices: list[Device], config: PlacementConfig = PlacementConfig(),
         running: Mapping[str, int] | None = None) -> list[Placement]:
    """Placements of every queued job, in fair order. Wave 0 fills the devices as they are now (what running jobs
    hold is taken, see inventory.with_holdings); each later wave starts from empty devices, as if every job placed
    before had ended: a simple, pessimistic model of when a job will start (no one knows how long jobs run)."""
    order = fair_order(queued, running, config)
    empty = [dataclasses.replace(d, free_bytes=d.total_bytes, jobs=0, holds=()) for d in devices]
    result: dict[str, Placement] = {}
    pending = []
    for position, job in enumerate(order, 1):
        if _take([_Room(d, d.free_bytes, 0) for d in empty], job, config) is None:
            result[job.id] = Placement(job.id, position, None, reason=f"never fits: {_never_reason(job, devices)}",
                                       estimate_bytes=job.estimate_bytes)
        else:
            pending.append((position, job))
    wave, current, now = 0, devices, devices
    while pending:
        rooms = [_Room(d, d.free_bytes, d.jobs) for d in current]
        left = []
        for position, job in pending:
            taken = None if left and not config.backfill else _take(rooms, job, config)
            if taken is None:
                left.append((position, job))
                continue
            result[job.id] = Placement(job.id, position, wave, taken, "", job.estimate_bytes)
        if wave == 0:  # what the waiting jobs are told is measured against the devices once wave 0 has started
            now = [dataclasses.replace(r.device, free_bytes=r.free, jobs=r.jobs) for r in rooms]
        # After wave 0 every device is empty, and each pending job fits empty devices (checked above), so every
        # later wave places at least its first job: the loop ends.
        pending, wave, current = left, wave + 1, empty
    asked = {job.id: job for job in order}
    for job_id, place in result.items():
        if place.wave:
            why = f"{waiting_reason(asked[job_id], now)}; expected in wave {place.wave}"
            result[job_id] = dataclasses.replace(place, reason=why)
    return [result[job.id] for job in order]


# ---- when ---------------------------------------------------------------------------------------
def _time_left(job: dict[str, Any]) -> float:
    """Seconds until a running job frees its slot, or a queued one would once started; inf when unknown."""
    if job["state"] == JobState.STOPPING:  # it ends after its current step and a checkpoint: soon, say now
        return 0.0
    return math.inf if job["eta_s"] is None else float(job["eta_s"])


def estimated_starts(jobs: list[dict[str, Any]], slots: int) -> dict[str, float | None]:
    """Seconds from now until each queued job starts, by job id; None where it cannot be told.

    `jobs` are status dicts as list_jobs hands them out (queued ones carry their queue_position). The model:
    `slots` job slots that take one job each. A running job frees its slot after its eta_s; queued jobs take
    slots in queue_position order (the order the runner offers them devices) and hold one for their own
    eta_s, which only a resumed job has (its time left when it stopped). So the job at place k starts when
    the k-th slot comes free: with two slots, one free and one whose job has 60 s left, #1 starts now and #2
    in 60 s; #3 waits for whichever of them ends first, which nobody knows if #1 never ran (None).

    What it does not know: how long a job that has not run yet takes (so every job that waits for its slot
    gets None); eta_s is itself a guess from the steps timed so far, as of the job's last status write, and
    None until its first steps; another owner's job submitted later may go ahead of these in the fair queue;
    a job may fail or be stopped early. It counts slots only: on GPUs, where placement weighs memory and
    jobs may ask for several devices, the caller passes GPUs x jobs_per_gpu and such jobs start later.
    """
    queued = sorted((j for j in jobs if j["state"] == JobState.QUEUED), key=lambda j: j["queue_position"])
    if slots < 1:  # nothing starts by itself (the runner may start no job here, max_running 0)
        return {job["id"]: None for job in queued}
    ends = [_time_left(j) for j in jobs if j["state"] in ACTIVE_STATES]
    ends += [0.0] * (slots - len(ends))  # a free slot frees now
    heapq.heapify(ends)
    starts: dict[str, float | None] = {}
    for job in queued:
        start = 0.0
        while len(ends) >= slots:  # more running jobs than slots (a foreground run): wait until one is spare
            start = heapq.heappop(ends)
        heapq.heappush(ends, start + _time_left(job))
        starts[job["id"]] = None if math.isinf(start) else start
    return starts


def plan_configs(configs: list[tuple[str, TrainConfig]], devices: list[Device], data_dir: str | Path,
                 config: PlacementConfig = PlacementConfig(), owner: str = "local") -> list[dict]:
    """`jobs plan`: where and in which wave each config would run on `devices`, queued in the order given by one
    owner, without running anything. One dict per config, in that order: config (its name), devices, wave,
    estimate_gb (per device; None when unknown), position and reason."""
    gpu = any(d.is_gpu for d in devices)
    requests = [JobRequest(str(n), owner, float(n), *job_size(cfg, estimate_job_bytes(cfg, data_dir), gpu))
                for n, (_, cfg) in enumerate(configs)]
    placed = {p.job: p for p in plan(requests, devices, config)}
    rows = []
    for n, (name, _) in enumerate(configs):
        place = placed[str(n)]
        rows.append({"config": name, "devices": list(place.devices), "wave": place.wave,
                     "estimate_gb": None if place.estimate_bytes is None else round(place.estimate_bytes / GB, 3),
                     "position": place.position, "reason": place.reason})
    return rows
