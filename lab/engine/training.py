"""The Engine's training operations: configs and presets, jobs and who may touch them, adapters, datasets."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from lab.core import access
from lab.core.settings import EMBEDDED_MODEL, REPO_ROOT
from lab.core.spaces import refuse_training_on_zero_gpu
from lab.core.users import LOCAL_USER, check_job_owner, check_name, uploads_dir
from lab.engine.uploads import UploadOps
from lab.explain import calculators
from lab.explain.sweeps.run import sweep_jobs
from lab.inference import adapters
from lab.knowledge.documents import Document
from lab.training import configs
from lab.training.configs.base import TrainConfig, field_docs
from lab.training.configs.pretrain import SCRATCH, TRAIN_TOKENIZER, PretrainConfig
from lab.training.configs.reward import RewardConfig
from lab.training.data import builder
from lab.training.jobs import inventory as job_inventory
from lab.training.jobs import placement as job_placement
from lab.training.jobs import runner as job_runner

Progress = Callable[[int, int, str], None]
PRESETS_DIR = REPO_ROOT / "assets" / "presets"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def config_paths(cfg: TrainConfig) -> list[tuple[str, str]]:
    """(field, path) of every file or folder a job config makes its job open: datasets, eval_dataset, a model
    folder, a pretraining tokenizer folder, a reward model. 'embedded', 'scratch' and Hub ids name no path."""
    paths = [(f"datasets[{i}].path", spec.path) for i, spec in enumerate(cfg.datasets)]
    if cfg.eval_dataset is not None:
        paths.append(("eval_dataset.path", cfg.eval_dataset.path))
    model_id = cfg.model_id.strip()
    # A Hub id (owner/name) is a folder too when one of that name exists where jobs run (the lab's folder).
    if model_id not in (EMBEDDED_MODEL, SCRATCH) and (not _HUB_ID.match(model_id) or access.resolve(model_id).exists()):
        paths.append(("model_id", model_id))
    if isinstance(cfg, PretrainConfig) and cfg.tokenizer not in (TRAIN_TOKENIZER, EMBEDDED_MODEL):
        paths.append(("tokenizer", cfg.tokenizer))
    if isinstance(cfg, RewardConfig) and cfg.reward_model:
        paths.append(("reward_model", cfg.reward_model))
    return paths



class TrainingOps(UploadOps):
    """Jobs run as subprocesses under one runner per process; only a job's owner (or an admin) controls it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._jobs: job_runner.JobRunner | None = None
        self._jobs_lock = threading.Lock()

    CONFIG_KINDS = configs.CONFIG_KINDS
    config_from_dict = staticmethod(configs.config_from_dict)
    field_docs = staticmethod(field_docs)
    command_preview = staticmethod(job_runner.command_preview)
    pretrain_preview = staticmethod(calculators.pretrain_preview)

    @staticmethod
    def load_config(path: str | Path) -> TrainConfig:
        """A job config YAML file; a YAML error names the file and the place, never a line of it."""
        return configs.config_from_dict(access.load_yaml_file(path), str(path))
    TEACH_PRESET = "sft_lora_qa"
    """The preset behind the Train tab's 'Teach this document' (SFT LoRA on the bundled Q&A set)."""

    def presets(self, kind: str) -> list[str]:
        """Names of the shipped job presets (assets/presets/*.yaml) of one kind, sorted."""
        return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")
                      if (yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("kind") == kind)

    def preset_yaml(self, name: str) -> str:
        """A shipped preset's YAML text, as the config editor shows it."""
        return (PRESETS_DIR / f"{check_name(name, 'Preset')}.yaml").read_text(encoding="utf-8")

    @property
    def jobs(self) -> job_runner.JobRunner:
        """The process's training job runner, started on first use (it polls job folders on disk)."""
        with self._jobs_lock:
            if self._jobs is None:
                self._jobs = job_runner.JobRunner(self.settings.subdir("jobs").parent, sessions=self.sessions,
                                                  cpu_slots=self.settings.cpu_job_slots,
                                                  priority=self.settings.admin_names())
                self._jobs.start_background()
            return self._jobs

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

    def submit_job(self, cfg: TrainConfig, user: str = LOCAL_USER) -> str:
        """Queue a training job owned by `user` (refused on a ZeroGPU Space, which cannot train). Before anything
        is written: every path the config names is checked, and the user's LAB_MAX_QUEUED_JOBS."""
        refuse_training_on_zero_gpu()
        self.check_config_paths(cfg, user)
        access.check_queued_jobs(self.settings, user, self.jobs.list())
        return self.jobs.submit(cfg, owner=user)

    JOB_ACTIONS = ("stop", "kill", "resume", "delete")

    def control_job(self, action: str, job_id: str, user: str = LOCAL_USER) -> dict:
        """Stop, kill, resume or delete a job; only its owner or an admin (LAB_ADMINS) may. Delete removes a
        finished (completed, failed or stopped) job's folder; its adapter, if any, stays."""
        if action not in self.JOB_ACTIONS:
            raise ValueError(f"Unknown job action {action!r}; use {', '.join(self.JOB_ACTIONS)}.")
        status = self.jobs.status(job_id)
        check_job_owner(status, user, action, self.settings.admin_names())
        if action == "resume":
            access.check_queued_jobs(self.settings, status.get("owner") or LOCAL_USER, self.jobs.list())
        if action == "delete":
            if status["state"] not in job_runner.FINAL_STATES:
                raise ValueError(f"Job {job_id} is {status['state']}; only a finished job (completed, failed or "
                                 "stopped) can be deleted: stop or kill it first.")
            shutil.rmtree(status["dir"])
            return {"id": job_id, "state": "deleted"}
        return getattr(self.jobs, action)(job_id)

    def list_jobs(self) -> list[dict]:
        return self.jobs.list()

    def plan_jobs(self, configs: Sequence[str | Path], inventory: str | Path | None = None) -> dict:
        """Where and in which wave each config would run (wave 0 = starts now), queued in that order, without
        running anything: on a declared inventory (YAML `devices: [{name: cuda:0, memory_gb: 80}, ...]`), or on
        this machine's devices as if no job ran. {"placements": [{config, devices, wave, estimate_gb, ...}]}."""
        devices = (job_inventory.load_inventory(inventory) if inventory is not None
                   else job_inventory.machine_devices(self.settings.cpu_job_slots))
        cfgs = [(str(path), self.load_config(path)) for path in configs]
        return {"placements": job_placement.plan_configs(cfgs, devices, self.settings.data_dir)}

    def job_status(self, job_id: str) -> dict:
        return self.jobs.status(job_id)

    def job_metrics(self, job_id: str, since: int = 0) -> list[dict]:
        return self.jobs.metrics(job_id, since)

    def job_log(self, job_id: str, lines: int = 40) -> str:
        return self.jobs.log(job_id, lines)

    def wait_job(self, job_id: str, timeout_s: float = 24 * 3600) -> dict:
        """Block until the job reaches a final state (TimeoutError after timeout_s); its final status."""
        return self.jobs.wait(job_id, timeout_s)

    def train_here(self, config: str | Path, resume: bool = False) -> dict:
        """Train a config file in this process, in a job folder like a background job's; its final status.

        A preset gets a new job folder; a job's own config.yaml trains (with resume: continues) that job."""
        # Imported here: trl and the trainers load only in a process that trains in the foreground.
        from lab.training.jobs.launch import run_config
        folder, _ = run_config(config, self.settings.data_dir, resume=resume)
        return job_runner.job_status(self.settings.data_dir, folder.name)

    def list_adapters(self, include_sweeps: bool = True) -> list[adapters.Adapter]:
        """Every trained adapter, newest first; without include_sweeps, those a sweep's points made are left out
        (a 6-point sweep would otherwise bury the adapters people trained on purpose)."""
        found = adapters.list_adapters(self.settings.data_dir)
        if include_sweeps:
            return found
        swept = self.adapter_sweeps(found)
        return [a for a in found if a.name not in swept]

    def adapter_sweeps(self, found: Sequence[adapters.Adapter] | None = None) -> dict[str, str]:
        """adapter name -> the id of the sweep whose point trained it, for `found` (default: every adapter). Read
        from the sweeps' records by job id, so a renamed sweep adapter still belongs to its sweep."""
        jobs = sweep_jobs(self.settings.data_dir)
        found = adapters.list_adapters(self.settings.data_dir) if found is None else found
        return {a.name: jobs[a.job_id] for a in found if a.job_id in jobs}

    def adapter_owner(self, adapter: adapters.Adapter) -> str:
        """Who may rename or delete `adapter`: the user whose job trained it (recorded with it, else read from the
        job), or the local user for an adapter from before owners were kept or copied in by hand."""
        if adapter.owner:
            return adapter.owner
        try:
            return (self.jobs.status(adapter.job_id).get("owner") if adapter.job_id else None) or LOCAL_USER
        except (OSError, ValueError):  # the job folder was deleted
            return LOCAL_USER

    def _own_adapter(self, name: str, user: str, action: str) -> adapters.Adapter:
        _, folder = adapters.resolve_adapter(self.settings.data_dir, adapters.check_adapter_name(name.strip()))
        adapter = adapters.Adapter.from_folder(folder)
        owner = self.adapter_owner(adapter)
        if owner != user and user not in self.settings.admin_names():
            raise PermissionError(f"Adapter {adapter.name} belongs to {owner}; only they (or an admin, LAB_ADMINS) "
                                  f"can {action} it.")
        return adapter

    def rename_adapter(self, name: str, new_name: str, user: str = LOCAL_USER) -> adapters.Adapter:
        """Rename the adapter `name` (its owner or an admin only); Compare and the Arena list it as ft:<new_name>."""
        self._own_adapter(name, user, "rename")
        return adapters.Adapter.from_folder(adapters.rename_adapter(self.settings.data_dir, name.strip(),
                                                                    new_name.strip()))

    def delete_adapter(self, name: str, user: str = LOCAL_USER) -> None:
        """Delete the adapter `name` (its owner or an admin only). Its job, if kept, stays; a merged export too."""
        self._own_adapter(name, user, "delete")
        adapters.delete_adapter(self.settings.data_dir, name.strip())

    def adapter_summary(self, adapter: adapters.Adapter) -> str:
        """One line on what an adapter is: how it was trained, on which base and data, how far and to what loss,
        e.g. 'sft lora on embedded · qa.jsonl · 55 steps · loss 0.33 · eval loss 0.41'. The numbers come from its
        job while the job's folder is kept; a hand-copied adapter says only what its files record."""
        parts = [" ".join(p for p in (adapter.kind, adapter.mode) if p) or "adapter"]
        parts[0] += f" on {Path(adapter.base_model_id).name or adapter.base_model_id}" if adapter.base_model_id else ""
        if adapter.data:
            parts.append(", ".join(adapter.data))
        try:
            status = self.jobs.status(adapter.job_id) if adapter.job_id else None
            metrics = self.jobs.metrics(adapter.job_id) if status else []
        except (OSError, ValueError):  # the job was deleted: the adapter outlives it
            status, metrics = None, []
        if status:
            parts.append(f"{status.get('step') or 0} steps")
        for key, label in (("loss", "loss"), ("eval_loss", "eval loss")):
            last = next((m[key] for m in reversed(metrics) if m.get(key) is not None), None)
            if last is not None:
                parts.append(f"{label} {last:.3g}")
        return " · ".join(parts)

    def adapter_names(self, include_sweeps: bool = True) -> list[str]:
        return sorted(a.name for a in self.list_adapters(include_sweeps))

    def merge_adapter(self, name: str) -> Path:
        """Merge the adapter `name` into its base and export it under <data>/merged/<name>."""
        adapter_name, folder = adapters.resolve_adapter(self.settings.data_dir, check_name(name.strip(), "Adapter"))
        return adapters.merge_adapter(folder, self.settings.subdir("merged") / adapter_name, self.settings.data_dir)

    def export_merged(self, adapter: str | Path, out_dir: str | Path, base_model_id: str | None = None) -> Path:
        """Merge an adapter folder into its base (the one recorded with it unless given) and write it to out_dir."""
        return adapters.merge_adapter(adapter, out_dir, self.settings.data_dir, base_model_id=base_model_id)

    def build_qa_dataset(self, doc: Document, cfg: builder.BuilderConfig,
                         progress: Progress | None = None) -> builder.BuildResult:
        """Question/answer pairs from a document, with schema-constrained decoding, validated and retried."""
        return builder.build_dataset(self, doc, cfg, progress)

    def save_qa_pairs(self, user: str, rows: Sequence[Sequence[str]], name: str) -> Path:
        """Save edited question/answer rows as <name>.jsonl (qa format) in `user`'s uploads."""
        pairs = [builder.QAPair(str(q).strip(), str(a).strip(), -1) for q, a in rows if str(q).strip() and str(a).strip()]
        if not pairs:
            raise ValueError("The table has no question/answer rows to save; build or type some first.")
        folder = uploads_dir(self.settings, user)
        access.check_workspace_quota(self.settings, user)
        path = builder.write_jsonl(pairs, folder / check_name(f"{(name or 'qa').strip()}.jsonl", "File name"))
        self._keep_within_quota(user, [path])
        return path

    write_qa_jsonl = staticmethod(builder.write_jsonl)
