"""Training jobs as folders on disk, run as `accelerate launch` subprocesses, as many at once as the devices take.

    python -m lab jobs list
    python -m lab show-command assets/presets/sft_lora_qa.yaml

Everything about a job lives in `<data>/jobs/<id>/` (config.yaml, status.json, metrics.jsonl,
train.log, checkpoints/, output/), so the job list, the queue and every state are rebuilt from
disk by whoever asks: the app after a restart, a second browser tab, the CLI. The runner adds
only what a file cannot hold (its Popen handles and memory reservations). Where and when a queued job
starts is decided in lab/training/jobs/placement.py (a fair queue across owners, devices by memory) over
the devices of lab/training/jobs/inventory.py; the runner pins each job to its devices.

States (JobState in lab/training/jobs/status.py): queued -> running -> completed | failed | stopped,
with stopping between running and stopped while the trainer saves a checkpoint. A job whose status
says running but whose process is gone is marked failed with the tail of its log. Every write goes
through `update_status`; the functions here hand status out as plain dicts (JobStatus fields plus
id and dir) for the tabs and the CLI.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from lab.core import names
from lab.core.errors import MemoryBudgetError
from lab.core.files import path_lock
from lab.core.settings import REPO_ROOT
from lab.training.configs import load_config
from lab.training.configs.base import TrainConfig, save_config
from lab.training.jobs.arbiter import make_room, reclaimable, reserve_making_room, takes_budget
from lab.training.jobs.command import launch_argv
from lab.training.jobs.files import (
    CONFIG_FILE,
    LOG_FILE,
    STATUS_FILE,
    STOP_FILE,
    last_checkpoint,
    log_tail,
    now_iso,
    read_metrics,
)
from lab.training.jobs.inventory import (
    Device,
    machine_devices,
    pinned_argv,
    running_holdings,
    visible_devices,
    with_holdings,
)
from lab.training.jobs.placement import JobRequest, PlacementConfig, estimate_job_bytes, fair_order, job_size, plan
from lab.training.jobs.status import ACTIVE_STATES, FINAL_STATES, JobState, JobStatus, read_status, update_status

if TYPE_CHECKING:  # only an annotation: listing jobs need not load the inference stack
    from lab.inference.session import SessionManager

JOB_ENV_HIDDEN = ("LAB_AUTH", "LAB_USERS_FILE", "*PASSWORD*", "*PASSWD*", "*SECRET*", "*API_KEY*")
"""Environment variables (fnmatch patterns) the web process never hands to a training job. A job runs a user's
config, data and model code, so it must not learn the sign-in passwords (LAB_AUTH), where the password file is
(LAB_USERS_FILE), or any other credential of the app (an endpoint's API key, a cloud secret). HF_TOKEN stays: a
job whose model_id is a Hub id needs it to download the weights."""

# ---- folders and files ------------------------------------------------------------------------
def job_dir(data_dir: str | Path, job_id: str) -> Path:
    """The folder of a job; ids that could leave <data>/jobs/ ('..', '/', empty) are refused."""
    return Path(data_dir) / "jobs" / names.job_id(job_id)


def existing_job_dir(data_dir: str | Path, job_id: str) -> Path:
    folder = job_dir(data_dir, job_id)
    if not (folder / STATUS_FILE).exists():
        raise ValueError(f"no job {job_id!r} in {Path(data_dir) / 'jobs'}")
    return folder


def create_job(cfg: TrainConfig, data_dir: str | Path, foreground: bool = False, owner: str = "local") -> str:
    """Write a new job folder (config.yaml + status.json) and return its id.

    The job is queued for the runner, or (foreground=True) marked running by this process, which
    then runs it itself (`python -m lab train`), so no runner picks it up meanwhile.
    """
    jobs = Path(data_dir) / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.kind}-{secrets.token_hex(3)}"
    folder = jobs / job_id
    folder.mkdir()
    save_config(cfg, folder / CONFIG_FILE)
    update_status(folder, id=job_id, owner=owner, kind=cfg.kind, mode=cfg.mode, model_id=cfg.model_id,
                  output_name=cfg.output_name, created=now_iso(), queued_at=time.time(), step=0,
                  max_steps=cfg.max_steps if cfg.max_steps > 0 else None,
                  **({"state": JobState.RUNNING, "message": "running in the foreground", "worker_pid": os.getpid(),
                      "worker_pid_started": psutil.Process().create_time()} if foreground
                     else {"state": JobState.QUEUED, "message": "queued"}))
    return job_id


# ---- processes --------------------------------------------------------------------------------
def _process_alive(pid: int | None, started: float | None) -> bool:
    """Alive and the same process (a recycled pid has another start time); zombies count as dead."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return (started is None or abs(proc.create_time() - started) < 1.0) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def job_alive(status: JobStatus) -> bool:
    return (_process_alive(status.pid, status.pid_started)
            or _process_alive(status.worker_pid, status.worker_pid_started))


def _death_message(job_folder: Path, returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        why = f"was killed by signal {-returncode}" + (" (often: the system ran out of memory)"
                                                       if -returncode == signal.SIGKILL else "")
    elif returncode is not None:
        why = f"exited with code {returncode} without a final state"
    else:
        why = "is gone without a final state (killed, or the machine restarted)"
    return f"The training process {why}. Last lines of train.log:\n{log_tail(job_folder, 15)}"


def refresh_status(folder: Path) -> JobStatus:
    """status.json, with a dead 'running' job turned into 'failed' on the way."""
    status = read_status(folder)
    if status.state in ACTIVE_STATES and not job_alive(status):
        status = update_status(folder, state=JobState.FAILED, finished=now_iso(),
                               message=_death_message(folder, None))
    return status


def job_dict(status: JobStatus, folder: Path) -> dict[str, Any]:
    """What list_jobs and job_status hand out: every JobStatus field, plus the folder's name as id and its path."""
    return dataclasses.asdict(status) | {"id": folder.name, "dir": str(folder)}


def list_jobs(data_dir: str | Path, priority: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Every job, oldest first (ids start with their creation time), rebuilt from disk; queued jobs carry
    their queue_position in the fair queue (1 = offered devices first; placement.fair_order, with the owners
    in `priority` first)."""
    jobs_root = Path(data_dir) / "jobs"
    jobs = [job_dict(refresh_status(f), f)
            for f in sorted(jobs_root.iterdir()) if (f / STATUS_FILE).exists()] if jobs_root.is_dir() else []
    running = Counter(j["owner"] or "local" for j in jobs if j["state"] in ACTIVE_STATES)
    queued = [JobRequest(j["id"], j["owner"] or "local", j["queued_at"] or 0.0)
              for j in jobs if j["state"] == JobState.QUEUED]
    positions = {job.id: n for n, job in enumerate(fair_order(queued, running, PlacementConfig(priority)), start=1)}
    for job in jobs:
        if job["id"] in positions:
            job["queue_position"] = positions[job["id"]]
    return jobs


def job_status(data_dir: str | Path, job_id: str) -> dict[str, Any]:
    folder = existing_job_dir(data_dir, job_id)
    return job_dict(refresh_status(folder), folder)


def job_metrics(data_dir: str | Path, job_id: str, since: int = 0) -> list[dict[str, Any]]:
    return read_metrics(existing_job_dir(data_dir, job_id), since)


def job_log(data_dir: str | Path, job_id: str, lines: int = 40) -> str:
    return log_tail(existing_job_dir(data_dir, job_id), lines)


# ---- stop, kill, resume (work from any process: they only touch files and signals) ------------
def stop_job(data_dir: str | Path, job_id: str) -> dict[str, Any]:
    """Graceful stop: the trainer sees the STOP file after its current step, saves a checkpoint and exits."""
    folder = existing_job_dir(data_dir, job_id)
    status = refresh_status(folder)
    if status.state == JobState.QUEUED:
        return job_dict(update_status(folder, state=JobState.STOPPED, finished=now_iso(),
                                      message="cancelled before it started"), folder)
    if status.state not in ACTIVE_STATES:
        raise ValueError(f"job {job_id} is {status.state}; only queued or running jobs can be stopped")
    # "stopping" is written before the STOP file exists: a fast trainer sees the file, saves and writes "stopped"
    # within a step, and a "stopping" written after that would overwrite its final state.
    stopping = update_status(folder, state=JobState.STOPPING,
                             message="stop requested: a checkpoint is saved after this step")
    (folder / STOP_FILE).touch()
    return job_dict(stopping, folder)


def kill_job(data_dir: str | Path, job_id: str, grace_s: float = 10.0) -> dict[str, Any]:
    """SIGTERM to the job's process group now (SIGKILL after grace_s); no checkpoint is written."""
    folder = existing_job_dir(data_dir, job_id)
    status = refresh_status(folder)
    if status.state == JobState.QUEUED:
        return job_dict(update_status(folder, state=JobState.STOPPED, finished=now_iso(),
                                      message="cancelled before it started"), folder)
    if status.state not in ACTIVE_STATES:
        raise ValueError(f"job {job_id} is {status.state}; only queued or running jobs can be killed")
    # The final state first, so whoever reaps the process does not report it as a crash.
    status = update_status(folder, state=JobState.STOPPED, finished=now_iso(),
                           message=f"killed at step {status.step}; resume continues from the last saved checkpoint")
    if _process_alive(status.pid, status.pid_started):
        group, pid = True, status.pid  # the launcher leads its own process group (start_new_session)
    else:
        group, pid = False, status.worker_pid  # a foreground `python -m lab.training.jobs.launch`
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except (ProcessLookupError, TypeError):
            break
        deadline = time.time() + grace_s
        while time.time() < deadline and job_alive(status):
            time.sleep(0.1)
        if not job_alive(status):
            break
    return job_dict(status, folder)


def resume_job(data_dir: str | Path, job_id: str) -> dict[str, Any]:
    """Queue a stopped or failed job again; it continues from its last checkpoint when it starts."""
    folder = existing_job_dir(data_dir, job_id)
    status = refresh_status(folder)
    if status.state not in (JobState.STOPPED, JobState.FAILED):
        raise ValueError(f"job {job_id} is {status.state}; only stopped or failed jobs can be resumed")
    (folder / STOP_FILE).unlink(missing_ok=True)
    checkpoint = last_checkpoint(folder)
    return job_dict(update_status(folder, state=JobState.QUEUED, resume=True, queued_at=time.time(), finished=None,
                                  message=f"queued to resume from {Path(checkpoint).name}" if checkpoint
                                  else "queued to restart (no checkpoint was saved)"), folder)


# ---- the environment --------------------------------------------------------------------------
def job_env(data_dir: str | Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a job's process: the app's own, minus JOB_ENV_HIDDEN, plus what every job needs."""
    inherited = {name: value for name, value in os.environ.items()
                 if not any(fnmatch.fnmatchcase(name.upper(), pattern) for pattern in JOB_ENV_HIDDEN)}
    # OMP_WAIT_POLICY: see lab/training/jobs/launch.py; a user's own setting wins.
    return ({"OMP_WAIT_POLICY": "PASSIVE"} | inherited
            | {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "LAB_DATA_DIR": str(data_dir)}
            | (extra or {}))


# ---- the runner -------------------------------------------------------------------------------
class JobRunner:
    """Starts queued jobs as subprocesses wherever they fit, several at once (lab/training/jobs/placement.py).

    One per process. `poll()` does all the work (reap finished children, fail dead jobs, place the queue,
    start the jobs that fit now and write every other queued job's place and reason into its message);
    `start_background()` calls it every few seconds from a daemon thread.
    """

    def __init__(self, data_dir: str | Path, sessions: SessionManager | Callable[[], SessionManager] | None = None,
                 max_running: int | None = None, env: dict[str, str] | None = None, cpu_slots: int = 1,
                 priority: frozenset[str] = frozenset(), devices: list[Device] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self._sessions = sessions  # or a function returning it (the Engine's, built with torch on first use)
        self.max_running = max_running
        """At most this many jobs run at once (counted across processes); None: as many as the devices take."""
        self.env = env or {}
        self.cpu_slots = cpu_slots
        """CPU job slots (LAB_CPU_JOB_SLOTS) on a machine without a GPU."""
        self.placement = PlacementConfig(priority_owners=frozenset(priority))
        self.declared = devices
        """A declared inventory to place jobs on instead of this machine's devices (tests, simulations)."""
        self._sizes: dict[str, tuple[int, int | None]] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._reserved: set[str] = set()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._restore_reservations()

    @property
    def sessions(self) -> SessionManager | None:  # a function given is called once a job needs it: no torch before
        self._sessions = self._sessions() if callable(self._sessions) else self._sessions
        return self._sessions

    # -- the public calls the Train tab and the CLI make --
    def submit(self, cfg: TrainConfig, owner: str = "local") -> str:
        """Create a job and start it now if a slot is free; otherwise it waits in the queue."""
        job_id = create_job(cfg, self.data_dir, owner=owner)
        self.poll()
        return job_id

    def list(self) -> list[dict[str, Any]]:
        self.poll()
        return list_jobs(self.data_dir, self.placement.priority_owners)

    def devices(self, jobs: list[dict[str, Any]] | None = None) -> list[Device]:
        """The devices jobs may use, with what running jobs hold and, on the GPU this process serves models from,
        the inference entries the arbiter could unload (counted as free: a job starting there has them unloaded)."""
        jobs = list_jobs(self.data_dir) if jobs is None else jobs
        devices = self.declared if self.declared is not None else machine_devices(self.cpu_slots)
        gpu = any(d.is_gpu for d in devices)
        held = running_holdings(jobs, devices, lambda job: (self._size(job, gpu) or (1, None))[1] or 0)
        return with_holdings(devices, held, reclaimable(self.sessions))

    def status(self, job_id: str) -> dict[str, Any]:
        self.poll()
        return job_status(self.data_dir, job_id)

    def metrics(self, job_id: str, since: int = 0) -> list[dict[str, Any]]:
        return job_metrics(self.data_dir, job_id, since)

    def log(self, job_id: str, lines: int = 40) -> str:
        return job_log(self.data_dir, job_id, lines)

    def stop(self, job_id: str) -> dict[str, Any]:
        status = stop_job(self.data_dir, job_id)
        self.poll()
        return status

    def kill(self, job_id: str) -> dict[str, Any]:
        status = kill_job(self.data_dir, job_id)
        self.poll()
        return status

    def resume(self, job_id: str) -> dict[str, Any]:
        resume_job(self.data_dir, job_id)
        self.poll()
        return job_status(self.data_dir, job_id)

    def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 0.5) -> dict[str, Any]:
        """Block until the job reaches a final state and its process has exited; TimeoutError otherwise."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            self.poll()
            status = job_status(self.data_dir, job_id)
            if status["state"] in FINAL_STATES and job_id not in self._procs:  # and our process reaped
                return status
            time.sleep(poll_s)
        raise TimeoutError(f"job {job_id} still {status['state']} after {timeout_s:.0f} s")

    # -- the work --
    def _restore_reservations(self) -> None:
        """After a restart, set memory aside again for jobs whose process outlived the old app, so the budget
        counts them; poll() gives it back when they end."""
        if self._sessions is None:
            return
        for job in list_jobs(self.data_dir):  # a dead 'running' job turns failed here and reserves nothing
            if job["state"] not in ACTIVE_STATES or not takes_budget(self.sessions, job["devices"] or []):
                continue
            folder = job_dir(self.data_dir, job["id"])
            try:
                self.sessions.reserve(job["id"], estimate_job_bytes(load_config(folder / CONFIG_FILE), self.data_dir))
            except (ValueError, MemoryBudgetError) as exc:  # it runs anyway; say why the budget does not count it
                logging.getLogger("lab.jobs").warning("job %s keeps running without a memory reservation: %s",
                                                      job["id"], exc)
                continue
            self._reserved.add(job["id"])

    def poll(self) -> None:
        with self._lock:
            for job_id, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    self._finished(job_id, proc.returncode)
            jobs_root = self.data_dir / "jobs"
            if not jobs_root.is_dir():
                return
            # A file lock, so two processes (the app and a CLI call) never start the same queued job.
            with path_lock(jobs_root / ".runner.lock"):
                jobs = list_jobs(self.data_dir)
                # Restored reservations belong to processes this runner did not start: free them when they end.
                states = {j["id"]: j["state"] for j in jobs}
                for job_id in self._reserved - set(self._procs):
                    if states.get(job_id) not in ACTIVE_STATES:
                        self.sessions.release(job_id)
                        self._reserved.discard(job_id)
                if any(j["state"] == JobState.QUEUED for j in jobs):  # else no device (torch) or sessions asked
                    self._schedule(jobs)

    def _schedule(self, jobs: list[dict[str, Any]]) -> None:
        """Place the queue; start the jobs of wave 0, tell every other queued job its place and what it waits for."""
        devices = self.devices(jobs)
        gpu = any(d.is_gpu for d in devices)
        queued = [JobRequest(j["id"], j["owner"] or "local", j["queued_at"] or 0.0, *size)
                  for j in jobs if j["state"] == JobState.QUEUED and (size := self._size(j, gpu)) is not None]
        active = [j for j in jobs if j["state"] in ACTIVE_STATES]
        room = None if self.max_running is None else self.max_running - len(active)
        by_id = {j["id"]: j for j in jobs}
        for place in plan(queued, devices, self.placement, Counter(j["owner"] or "local" for j in active)):
            job, folder = by_id[place.job], job_dir(self.data_dir, place.job)
            if place.wave is None:
                update_status(folder, state=JobState.FAILED, finished=now_iso(), message=f"cannot start: {place.reason}")
            elif place.wave == 0 and (room is None or room > 0):
                started = self._start(place.job, job["resume"], list(place.devices))
                room = None if room is None else room - started
            else:
                why = place.reason or f"waiting: at most {self.max_running} jobs run at once here"
                if job["message"] != (message := f"#{place.position} in queue: {why}"):  # write only a change
                    update_status(folder, message=message)

    def _size(self, job: dict[str, Any], gpu: bool) -> tuple[int, int | None] | None:
        """(devices, bytes per device) the job asks for (placement.job_size), read from its config once the estimate
        is known; None, and a queued job failed with the reason, when its config cannot be read."""
        if job["id"] in self._sizes:
            return self._sizes[job["id"]]
        try:
            cfg = load_config(Path(job["dir"]) / CONFIG_FILE)
            size = job_size(cfg, estimate_job_bytes(cfg, self.data_dir), gpu)
        except ValueError as exc:
            if job["state"] == JobState.QUEUED:
                update_status(Path(job["dir"]), state=JobState.FAILED, finished=now_iso(), message=str(exc))
            return None
        if size[1] is not None:  # an unknown estimate may become known once the model is downloaded
            self._sizes[job["id"]] = size
        return size

    def _start(self, job_id: str, resume: bool, devices: list[str]) -> bool:
        folder = job_dir(self.data_dir, job_id)
        try:
            cfg = load_config(folder / CONFIG_FILE)
            argv = pinned_argv(launch_argv(cfg, folder / CONFIG_FILE, resume), devices, self.cpu_slots)
        except ValueError as exc:
            update_status(folder, state=JobState.FAILED, finished=now_iso(), message=str(exc))
            return False
        made_room = make_room(self.sessions, devices)
        if takes_budget(self.sessions, devices):
            nbytes = estimate_job_bytes(cfg, self.data_dir)
            try:
                made_room += reserve_making_room(self.sessions, job_id, nbytes)  # idle models give way if needed
            except MemoryBudgetError as exc:
                if nbytes > self.sessions.budget_bytes:
                    update_status(folder, state=JobState.FAILED, finished=now_iso(), message=str(exc))
                else:
                    update_status(folder, message=f"waiting for memory: {exc}")
                return False
            self._reserved.add(job_id)
        pin = {"CUDA_VISIBLE_DEVICES": visible_devices(devices)} if devices and devices[0].startswith("cuda:") else {}
        env = job_env(self.data_dir, self.env | pin)
        with open(folder / LOG_FILE, "ab") as log:
            log.write(f"\n=== {now_iso()} {shlex.join(argv)}\n".encode())
            log.flush()
            # Its own session (process group), so kill reaches the launcher and every worker it spawned.
            proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self._procs[job_id] = proc
        update_status(folder, state=JobState.RUNNING, pid=proc.pid, pid_started=psutil.Process(proc.pid).create_time(),
                      worker_pid=None, worker_pid_started=None, started=now_iso(), finished=None, devices=devices,
                      message=f"starting on {', '.join(devices)}: loading model and data{made_room}")
        return True

    def _finished(self, job_id: str, returncode: int) -> None:
        self._procs.pop(job_id)
        if job_id in self._reserved and self.sessions is not None:
            self.sessions.release(job_id)
            self._reserved.discard(job_id)
        folder = job_dir(self.data_dir, job_id)
        if read_status(folder).state in ACTIVE_STATES:
            update_status(folder, state=JobState.FAILED, finished=now_iso(), returncode=returncode,
                          message=_death_message(folder, returncode))
        else:
            update_status(folder, returncode=returncode)

    # -- background polling --
    def start_background(self, interval_s: float = 2.0) -> None:
        """Poll from a daemon thread, so queued jobs start and finished ones are reaped without a caller."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._closing.wait(interval_s):
                try:
                    self.poll()
                except Exception as exc:  # a bad job folder must not end the poller
                    print(f"job runner: {exc}", file=sys.stderr)

        self._thread = threading.Thread(target=loop, name="job-runner", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling; running jobs keep going (they are separate processes) and are found again on restart."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
