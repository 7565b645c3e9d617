"""Devices shared by training and serving: what this process runs on, when queued jobs start, who holds what.

    python -m lab info

Read-only: it reads what the job runner (lab/training/jobs/runner.py), its inventory and arbiter, and the
session manager already know, and decides nothing. The Train tab shows queue_estimates beside each queued job,
the System tab one row per device_holdings entry and the session manager's stats.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Any, cast

from lab.core.device import DeviceChoice, memory_info
from lab.engine.jobs import Jobs
from lab.engine.knowledge import Knowledge
from lab.inference.runtime import Runtime
from lab.training.jobs import arbiter
from lab.training.jobs import placement as job_placement
from lab.training.jobs import runner as job_runner
from lab.training.jobs.inventory import Device
from lab.training.jobs.status import ACTIVE_STATES

if TYPE_CHECKING:
    from lab.inference.session import SessionManager


def _job_row(job: dict[str, Any]) -> dict[str, Any]:
    return {"id": job["id"], "owner": job["owner"] or "local", "kind": job["kind"], "state": str(job["state"]),
            "eta_s": job["eta_s"]}


class Devices:
    """Training jobs and served models on the same devices, as the System and Train tabs show them."""

    def __init__(self, runtime: Runtime, jobs: Jobs, knowledge: Knowledge) -> None:
        self.runtime, self.settings, self.jobs, self.knowledge = runtime, runtime.settings, jobs, knowledge

    @property
    def device(self) -> DeviceChoice:
        return self.runtime.device

    @property
    def sessions(self) -> SessionManager:
        """The Runtime's session manager, built on first use (not when the Engine is)."""
        return self.runtime.sessions

    def info(self) -> dict:
        """Everything the System tab and `python -m lab info` show."""
        import torch  # the versions and the GPU's name; torch is loaded by then in a process that serves models

        mem = self.memory_info()
        info = {"python": platform.python_version(), "torch": torch.__version__,
                "device": self.device.device, "dtype": str(self.device.dtype).removeprefix("torch."),
                "attn_implementation": self.device.attn_implementation,
                "gpu_name": torch.cuda.get_device_name(0) if self.device.device == "cuda" else None,
                "memory_mb": {k: round(v / 2**20) for k, v in mem.items()},
                "data_dir": str(self.settings.data_dir), "default_model": self.settings.model_id,
                "load_in_4bit": self.settings.load_in_4bit, "sign_in": bool(self.settings.auth)}
        return info | {"session": self.stats()}

    def stats(self) -> dict:
        """The session manager's stats, plus the evaluations running now (user, answered, answers, cancelled)."""
        return self.sessions.stats() | {"evaluations": self.knowledge.running_evaluations()}

    def memory_info(self) -> dict[str, float]:
        """Total and free bytes of the device models run on."""
        return memory_info(self.device.device)

    def _devices(self, jobs: list[dict]) -> list[Device]:
        # JobRunner.devices is annotated list[Device], which mypy reads as its own `list` method there
        return cast("list[Device]", self.jobs.runner.devices(jobs))

    def _job_list(self, jobs: list[dict] | None) -> list[dict]:
        """The jobs as on disk: read only, no poll (the runner's own thread starts and reaps jobs), so a tab's
        timer never waits on the runner's lock."""
        runner = self.jobs.runner
        return job_runner.list_jobs(runner.data_dir, runner.placement.priority_owners) if jobs is None else jobs

    def queue_estimates(self, jobs: list[dict] | None = None) -> dict[str, float | None]:
        """Seconds until each queued job starts, by id (None: cannot be told); see placement.estimated_starts for
        the model and what it does not know. `jobs`: the Jobs.all result the caller already has, if any. Slots are
        the CPU job slots, or GPUs x jobs_per_gpu, and never more than the runner's max_running."""
        jobs, runner = self._job_list(jobs), self.jobs.runner
        devices = self._devices(jobs)
        slots = len(devices) * (runner.placement.jobs_per_gpu if any(d.is_gpu for d in devices) else 1)
        if runner.max_running is not None:
            slots = min(slots, runner.max_running)
        return job_placement.estimated_starts(jobs, slots)

    def device_holdings(self, jobs: list[dict] | None = None) -> list[dict[str, Any]]:
        """One row per device jobs may use (each CPU job slot, or each GPU), plus one for the session manager's
        device when jobs cannot use it (the CPU whose RAM serves models beside the job slots). Each row: device,
        total_mb and free_mb (None on a CPU slot, whose RAM the slots share), jobs (running jobs on it: id, owner,
        kind, state, eta_s), serving (the session manager's entries there: key, label, kind, mb, pinned),
        reservations (memory set aside for a job on it: job, mb) and waiting (what requests wait for there)."""
        jobs = self._job_list(jobs)
        devices = self._devices(jobs)
        stats = self.sessions.stats()
        running = {j["id"]: j for j in jobs if j["state"] in ACTIVE_STATES}
        serving_on = arbiter.serving_gpu(self.sessions) or self.sessions.device.device
        rows: list[dict[str, Any]] = [
            {"device": d.name, "total_mb": None if d.total_bytes is None else round(d.total_bytes / 2**20),
             "free_mb": None if d.free_bytes is None else round(d.free_bytes / 2**20),
             # holds lists the device's job ids first (inventory.with_holdings), serving labels after
             "jobs": [_job_row(running[i]) for i in d.holds[:d.jobs] if i in running],
             "serving": [], "reservations": [], "waiting": []} for d in devices]
        if serving_on not in {d.name for d in devices}:
            rows.append({"device": serving_on, "total_mb": None, "free_mb": None, "jobs": [], "serving": [],
                         "reservations": [], "waiting": []})
        by_name = {row["device"]: row for row in rows}
        job_device = {job["id"]: row["device"] for row in rows for job in row["jobs"]}
        for entry in stats["entries"]:
            if entry["kind"] == "reservation":  # on the device its job runs on (the serving one once it ended)
                job_id = entry["key"].removeprefix("reservation:")
                by_name[job_device.get(job_id, serving_on)]["reservations"].append({"job": job_id, "mb": entry["mb"]})
            else:
                by_name[serving_on]["serving"].append({k: entry[k] for k in ("key", "label", "kind", "mb", "pinned")})
        by_name[serving_on]["waiting"] = list(stats["memory_waits"].values())
        return rows
