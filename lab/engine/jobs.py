"""Training jobs: configs and presets, submitting, controlling and reading jobs, and who may touch them.

    python -c "from lab.engine import Engine; print(Engine().jobs.all())"

Jobs run as subprocesses under one JobRunner per process (`runner`, started on first use); only a job's owner
(or an admin) controls it, and a config may name only files its user may read.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from lab.core import access, names
from lab.core.settings import EMBEDDED_MODEL, REPO_ROOT
from lab.core.spaces import refuse_training_on_zero_gpu
from lab.core.users import LOCAL_USER, check_job_owner
from lab.inference.runtime import Runtime
from lab.training import configs
from lab.training.configs.base import TrainConfig, field_docs
from lab.training.configs.pretrain import SCRATCH, TRAIN_TOKENIZER, PretrainConfig
from lab.training.configs.reward import RewardConfig
from lab.training.jobs import command as job_command
from lab.training.jobs import inventory as job_inventory
from lab.training.jobs import placement as job_placement
from lab.training.jobs import runner as job_runner

if TYPE_CHECKING:
    from lab.inference.session import SessionManager

Progress = Callable[[int, int, str], None]
PRESETS_DIR = REPO_ROOT / "assets" / "presets"


def config_paths(cfg: TrainConfig) -> list[tuple[str, str]]:
    """(field, path) of every file or folder a job config makes its job open: datasets, eval_dataset, a model
    folder, a pretraining tokenizer folder, a reward model. 'embedded', 'scratch' and Hub ids name no path."""
    paths = [(f"datasets[{i}].path", spec.path) for i, spec in enumerate(cfg.datasets)]
    if cfg.eval_dataset is not None:
        paths.append(("eval_dataset.path", cfg.eval_dataset.path))
    model_id = cfg.model_id.strip()
    # A Hub id (owner/name) is a folder too when one of that name exists where jobs run (the lab's folder).
    if model_id not in (EMBEDDED_MODEL, SCRATCH) and (not names.is_hub_id(model_id) or access.resolve(model_id).exists()):
        paths.append(("model_id", model_id))
    if isinstance(cfg, PretrainConfig) and cfg.tokenizer not in (TRAIN_TOKENIZER, EMBEDDED_MODEL):
        paths.append(("tokenizer", cfg.tokenizer))
    if isinstance(cfg, RewardConfig) and cfg.reward_model:
        paths.append(("reward_model", cfg.reward_model))
    return paths


class Jobs:
    """The process's training jobs, each owned by the user who submitted it."""
    CONFIG_KINDS = configs.CONFIG_KINDS
    TEACH_PRESET = "sft_lora_qa"
    """The preset behind the Train tab's 'Teach this document' (SFT LoRA on the bundled Q&A set)."""
    ACTIONS = ("stop", "kill", "resume", "delete")

    def __init__(self, runtime: Runtime) -> None:
        self.runtime, self.settings = runtime, runtime.settings
        self._runner: job_runner.JobRunner | None = None
        self._runner_lock = threading.Lock()

    @property
    def sessions(self) -> SessionManager:
        """The Runtime's session manager, built on first use (not when the Engine is)."""
        return self.runtime.sessions

    @property
    def runner(self) -> job_runner.JobRunner:
        """The process's training job runner, started on first use (it polls job folders on disk)."""
        return self.start()

    def start(self) -> job_runner.JobRunner:
        """Start the runner if it has not started, and return it. The app starts it at launch, so queued jobs start
        without anyone opening the job list and the memory of jobs that kept running through a restart is set aside
        again."""
        with self._runner_lock:
            if self._runner is None:
                # The session manager is handed over as a function: the runner asks for it when a job needs it.
                self._runner = job_runner.JobRunner(self.settings.subdir("jobs").parent,
                                                    sessions=lambda: self.runtime.sessions,
                                                    cpu_slots=self.settings.cpu_job_slots,
                                                    priority=self.settings.admin_names())
                self._runner.start_background()
            return self._runner

    def close(self) -> None:
        """Stop the runner's polling thread if one was started; jobs it launched keep running."""
        if self._runner is not None:
            self._runner.close()

    # ---- configs and presets ----------------------------------------------------------------------------------
    def config_from_dict(self, data: dict, source: str = "config") -> TrainConfig:
        """A job config from a mapping (the Train tab's editor); errors name the field."""
        return configs.config_from_dict(data, source)

    def field_docs(self, cls: type) -> dict[str, str]:
        """Each field of a config dataclass -> its docstring, as the forms show them."""
        return field_docs(cls)

    def command_preview(self, cfg: TrainConfig) -> str:
        """The command line a job of this config runs."""
        return job_command.command_preview(cfg)

    def load_config(self, path: str | Path) -> TrainConfig:
        """A job config YAML file; a YAML error names the file and the place, never a line of it."""
        return configs.config_from_dict(access.load_yaml_file(path), str(path))

    def presets(self, kind: str) -> list[str]:
        """Names of the shipped job presets (assets/presets/*.yaml) of one kind, sorted."""
        return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")
                      if (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("kind") == kind)

    def preset_yaml(self, name: str) -> str:
        """A shipped preset's YAML text, as the config editor shows it."""
        return (PRESETS_DIR / f"{names.check_name(name, 'Preset')}.yaml").read_text(encoding="utf-8")

    def check_config_paths(self, cfg: TrainConfig, user: str) -> None:
        """Refuse (PermissionError naming the field and the path) a config that names a file or folder outside
        assets/, `user`'s own workspace and the lab's outputs. The local user (no sign-in, the command line,
        `python -m lab train`) is the machine's own user: it can read those files from its shell anyway, so it
        is not confined; with sign-in on, no web request is the local user."""
        if user == LOCAL_USER:
            return
        for what, path in config_paths(cfg):
            if what in ("model_id", "reward_model"):  # the one rule for models: the lab's default is always allowed
                access.allowed_model(self.settings, user, path, what)
            else:
                access.allowed_path(self.settings, user, path, what)

    # ---- jobs -------------------------------------------------------------------------------------------------
    def submit(self, cfg: TrainConfig, user: str = LOCAL_USER) -> str:
        """Queue a training job owned by `user` (refused on a ZeroGPU Space, which cannot train). Before anything
        is written: every path the config names is checked, and the user's LAB_MAX_QUEUED_JOBS."""
        refuse_training_on_zero_gpu()
        self.check_config_paths(cfg, user)
        access.check_queued_jobs(self.settings, user, self.runner.list())
        return self.runner.submit(cfg, owner=user)

    def control(self, action: str, job_id: str, user: str = LOCAL_USER) -> dict:
        """Stop, kill, resume or delete a job; only its owner or an admin (LAB_ADMINS) may. Delete removes a
        finished (completed, failed or stopped) job's folder; its adapter, if any, stays."""
        if action not in self.ACTIONS:
            raise ValueError(f"Unknown job action {action!r}; use {', '.join(self.ACTIONS)}.")
        status = self.runner.status(job_id)
        check_job_owner(status, user, action, self.settings.admin_names())
        if action == "resume":
            access.check_queued_jobs(self.settings, status.get("owner") or LOCAL_USER, self.runner.list())
        if action == "delete":
            if status["state"] not in job_runner.FINAL_STATES:
                raise ValueError(f"Job {job_id} is {status['state']}; only a finished job (completed, failed or "
                                 "stopped) can be deleted: stop or kill it first.")
            shutil.rmtree(status["dir"])
            return {"id": job_id, "state": "deleted"}
        return getattr(self.runner, action)(job_id)

    def all(self) -> list[dict]:
        """Every job's status, after one poll of the runner (which starts queued jobs and reaps finished ones)."""
        return self.runner.list()

    def on_disk(self) -> list[dict]:
        """Every job's status as its folder says, without polling: what a tab's timer reads. The runner's own thread
        polls in the app, so a timer never waits on the runner's lock (which a poll holds while it starts a job)."""
        return job_runner.list_jobs(self.runner.data_dir, self.runner.placement.priority_owners)

    def plan(self, configs: Sequence[str | Path], inventory: str | Path | None = None) -> dict:
        """Where and in which wave each config would run (wave 0 = starts now), queued in that order, without
        running anything: on a declared inventory (YAML `devices: [{name: cuda:0, memory_gb: 80}, ...]`), or on
        this machine's devices as if no job ran. {"placements": [{config, devices, wave, estimate_gb, ...}]}."""
        devices = (job_inventory.load_inventory(inventory) if inventory is not None
                   else job_inventory.machine_devices(self.settings.cpu_job_slots))
        cfgs = [(str(path), self.load_config(path)) for path in configs]
        return {"placements": job_placement.plan_configs(cfgs, devices, self.settings.data_dir)}

    def status(self, job_id: str) -> dict:
        return self.runner.status(job_id)

    def metrics(self, job_id: str, since: int = 0) -> list[dict]:
        return self.runner.metrics(job_id, since)

    def log(self, job_id: str, lines: int = 40) -> str:
        return self.runner.log(job_id, lines)

    def wait(self, job_id: str, timeout_s: float = 24 * 3600) -> dict:
        """Block until the job reaches a final state (TimeoutError after timeout_s); its final status."""
        return self.runner.wait(job_id, timeout_s)

    def train_here(self, config: str | Path, resume: bool = False) -> dict:
        """Train a config file in this process, in a job folder like a background job's; its final status.

        A preset gets a new job folder; a job's own config.yaml trains (with resume: continues) that job."""
        # Imported here: trl and the trainers load only in a process that trains in the foreground.
        from lab.training.jobs.launch import run_config
        folder, _ = run_config(config, self.settings.data_dir, resume=resume)
        return job_runner.job_status(self.settings.data_dir, folder.name)
