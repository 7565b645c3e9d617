"""The Engine's view of devices shared by training and serving: when queued jobs start, who holds what, who waits.

    python -c "from lab.engine import Engine; print(Engine().device_holdings())"

Read-only: it reads what the job runner (lab/training/jobs/runner.py), its inventory and arbiter, and the
session manager already know, and decides nothing. The Train tab shows queue_estimates beside each queued job,
the System tab one row per device_holdings entry, and the model tabs memory_wait while a request waits.
"""

from __future__ import annotations

from typing import Any

from lab.engine.training import TrainingOps
from lab.training.jobs import arbiter
from lab.training.jobs import placement as job_placement
from lab.training.jobs import runner as job_runner
from lab.training.jobs.status import ACTIVE_STATES


def _job_row(job: dict[str, Any]) -> dict[str, Any]:
    return {"id": job["id"], "owner": job["owner"] or "local", "kind": job["kind"], "state": str(job["state"]),
            "eta_s": job["eta_s"]}


class PlacementOps(TrainingOps):
    """Training jobs and served models on the same devices, as the tabs show them."""
    estimated_starts = staticmethod(job_placement.estimated_starts)

    def _job_list(self, jobs: list[dict] | None) -> list[dict]:
        """The jobs as on disk: read only, no poll (the runner's own thread starts and reaps jobs), so a tab's
        timer never waits on the runner's lock."""
        return job_runner.list_jobs(self.jobs.data_dir, self.jobs.placement.priority_owners) if jobs is None else jobs

    def queue_estimates(self, jobs: list[dict] | None = None) -> dict[str, float | None]:
        """Seconds until each queued job starts, by id (None: cannot be told); see placement.estimated_starts for
        the model and what it does not know. `jobs`: the list_jobs result the caller already has, if any. Slots are
        the CPU job slots, or GPUs x jobs_per_gpu, and never more than the runner's max_running."""
        jobs = self._job_list(jobs)
        devices = self.jobs.devices(jobs)
        slots = len(devices) * (self.jobs.placement.jobs_per_gpu if any(d.is_gpu for d in devices) else 1)
        if self.jobs.max_running is not None:
            slots = min(slots, self.jobs.max_running)
        return job_placement.estimated_starts(jobs, slots)

    def device_holdings(self, jobs: list[dict] | None = None) -> list[dict[str, Any]]:
        """One row per device jobs may use (each CPU job slot, or each GPU), plus one for the session manager's
        device when jobs cannot use it (the CPU whose RAM serves models beside the job slots). Each row: device,
        total_mb and free_mb (None on a CPU slot, whose RAM the slots share), jobs (running jobs on it: id, owner,
        kind, state, eta_s), serving (the session manager's entries there: key, label, kind, mb, pinned),
        reservations (memory set aside for a job on it: job, mb) and waiting (what requests wait for there)."""
        jobs = self._job_list(jobs)
        devices = self.jobs.devices(jobs)
        stats = self.sessions.stats()
        running = {j["id"]: j for j in jobs if j["state"] in ACTIVE_STATES}
        serving_on = arbiter.serving_gpu(self.sessions) or self.sessions.device.device
        rows = [{"device": d.name, "total_mb": None if d.total_bytes is None else round(d.total_bytes / 2**20),
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

    def memory_wait(self, caller: str) -> str | None:
        """What `caller`'s request waits for while a training job's reservation holds the memory its model needs
        (it waits up to the session manager's memory_wait_s, then fails naming the job); None when it does not."""
        return self.sessions.memory_wait(caller)
