"""A job's status.json as a typed record: the states a job moves through and every field anyone writes.

    python -c "from lab.training.jobs.status import read_status; print(read_status('data/jobs/<id>'))"

Three kinds of process write one job's status.json: the runner (queued, started, reaped; lab/training/jobs/runner.py),
the training process (lab/training/jobs/launch.py, JobCallback in lab/training/jobs/callback.py and the kind's
own row counts in lab/training/kinds/) and a foreground `python -m lab train`. `update_status` is the only
writer: it refuses a key that is not a JobStatus field, so a typo cannot add a field nobody reads, and it
merges under a file lock and replaces the file atomically, so two writers never lose each other's fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.core.checks import check
from lab.core.files import atomic_write_json, path_lock

# The states live with the lab's names; offered here too, where the job's status is.
from lab.core.names import ACTIVE_STATES as ACTIVE_STATES
from lab.core.names import FINAL_STATES as FINAL_STATES
from lab.core.names import JobState
from lab.training.jobs.files import STATUS_FILE, now_iso

LOCK_FILE = ".status.lock"


@dataclass
class JobStatus:
    """Everything status.json holds. None means "not written yet" (a queued job has no pid, a job
    that has not finished no `finished`)."""

    # ---- the job (create_job) ----
    id: str | None = None
    """The job folder's name: <created time>-<kind>-<6 hex digits>."""
    owner: str | None = None
    """The user who submitted it ('local' from the CLI); only they may stop, kill or resume it."""
    kind: str | None = None
    """sft, dpo, grpo, ppo or pretrain: picks the trainer in lab/training/jobs/launch.py."""
    mode: str | None = None
    """full, lora or qlora (pretraining is always full)."""
    model_id: str | None = None
    """The model it starts from, as the config names it ('embedded', a folder or a Hub id)."""
    output_name: str | None = None
    """The name its adapter is registered under when it completes (None: the job id)."""
    created: str | None = None
    """When the folder was written (ISO 8601, UTC)."""
    queued_at: float | None = None
    """When it entered the queue, or re-entered it on resume (Unix seconds); queued jobs start in this order."""
    resume: bool = False
    """Set while a resumed job waits: the runner launches it with --resume, and the launch clears it."""

    # ---- the state ----
    state: JobState | None = None
    """Where the job is (JobState); None only for a folder whose status.json is missing or half written."""
    message: str = ""
    """One line for people: what the job is doing now, or why it ended (a failure's readable cause)."""
    updated: str | None = None
    """When status.json was last written (ISO 8601, UTC); every update sets it."""

    # ---- the processes ----
    pid: int | None = None
    """The `accelerate launch` process the runner started; it leads its own process group, which kill ends."""
    pid_started: float | None = None
    """pid's start time (Unix seconds), so a recycled pid is not taken for the job's process."""
    worker_pid: int | None = None
    """The training process itself (rank 0), or the foreground `python -m lab train` process."""
    worker_pid_started: float | None = None
    """worker_pid's start time (Unix seconds), for the same recycled-pid check."""
    started: str | None = None
    """When the runner (or the training process) last started it (ISO 8601, UTC)."""
    finished: str | None = None
    """When it reached a final state (ISO 8601, UTC); cleared when it is queued again."""
    returncode: int | None = None
    """The launcher's exit code, set when the runner reaps it (negative: killed by that signal)."""
    devices: list[str] | None = None
    """What the runner placed it on ('cuda:0', 'cuda:3' or a CPU job slot 'cpu:1'); None for a job it did not
    start (a foreground `python -m lab train`). Other runners read it to know which devices are taken."""

    # ---- progress (JobCallback) ----
    step: int = 0
    """Optimizer steps done (a resumed job counts on from its checkpoint)."""
    max_steps: int | None = None
    """Steps the run will take (None until the trainer knows it, when the config counts epochs)."""
    eta_s: float | None = None
    """Seconds left, from the time per step since this run started (0 once completed)."""
    tokens_per_s: float | None = None
    """Trained tokens per second between the last two log steps (kinds that report num_tokens)."""
    peak_memory_mb: float | None = None
    """Peak memory of the training process so far: CUDA max allocated on a GPU, else peak resident RAM."""
    world_size: int | None = None
    """Training processes (GPUs) taking part."""

    # ---- what the kind reports before training ----
    train_rows: int | None = None
    """Training rows after loading (prompts for GRPO and PPO, blocks of max_length tokens for pretraining)."""
    eval_rows: int | None = None
    """Held-out rows scored every eval_steps (0: no evaluation)."""
    prompts_dropped: int | None = None
    """GRPO and PPO: prompts left out because they were longer than max_length tokens."""
    load_in_4bit: bool | None = None
    """SFT: whether the base model really loaded in 4 bits (mode qlora)."""
    trainable_params: int | None = None
    """Parameters the optimizer updates (the adapters under LoRA/QLoRA)."""
    total_params: int | None = None
    """All parameters of the model being trained, adapters included."""
    reference: str | None = None
    """DPO and PPO: what the policy is compared against ('adapters disabled' or 'frozen copy of the model')."""
    backend: str | None = None
    """Pretraining: the transformers config class the architecture maps onto (LlamaConfig, ...)."""

    # ---- the outcome (launch.py) ----
    output_dir: str | None = None
    """The folder the finished model or adapter was saved to (<job>/output)."""
    adapter_dir: str | None = None
    """Where the finished adapter was registered (<data>/adapters/<name>); None for full models."""
    error_type: str | None = None
    """The exception class a failed job ended with (the traceback is in train.log)."""

    def __post_init__(self) -> None:
        if self.state is not None:
            check(self.state in tuple(JobState), "state",
                  f"must be one of {', '.join(JobState)}", self.state)
            self.state = JobState(self.state)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobStatus:
        """The fields of a status.json object; keys it does not know (from older versions) are left out."""
        return cls(**{k: v for k, v in raw.items() if k in FIELD_NAMES})


FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(JobStatus))


def read_status(job_dir: Path) -> JobStatus:
    """The job's status; an empty JobStatus (state None) when status.json is missing or half written."""
    try:
        raw = json.loads((Path(job_dir) / STATUS_FILE).read_text())
    except FileNotFoundError:
        return JobStatus()
    except json.JSONDecodeError:  # only if a writer died mid-write on a filesystem without atomic rename
        return JobStatus()
    return JobStatus.from_dict(raw)


def update_status(job_dir: Path, **fields: Any) -> JobStatus:
    """Merge `fields` into status.json and return the result: the only way anything writes a job's status.

    Raises ValueError for a key that is not a JobStatus field or a state that is not a JobState. The merge
    happens under an exclusive lock on <job>/.status.lock (the runner, the trainer and the tabs' stop buttons
    write the same file) and the new file replaces the old in one rename, so a reader never sees half of it."""
    for key in fields:
        check(key in FIELD_NAMES, key, "is not a job status field (JobStatus in lab/training/jobs/status.py "
              "lists them)", fields[key])
    check("updated" not in fields, "updated", "is set by every write, not by the caller", fields.get("updated"))
    if "state" in fields:
        check(fields["state"] is not None, "state", f"must be one of {', '.join(JobState)}", None)
    job_dir = Path(job_dir)
    with path_lock(job_dir / LOCK_FILE):
        status = dataclasses.replace(read_status(job_dir), **fields, updated=now_iso())
        atomic_write_json(job_dir / STATUS_FILE, dataclasses.asdict(status))
    return status

