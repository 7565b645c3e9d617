"""The engine: the one facade the tabs, the CLI and the tests call.

    python -m lab info

An Engine is the process's Runtime (settings, device, session manager) plus every operation a
user can ask for, grouped below by area: knowledge (documents, compare, evaluation), Arena,
training (configs, jobs, adapters, datasets) and Explain (catalog, calculators, sweeps). Every
decision about who may touch which file, job, model or quota is made here, once: a method that
acts for a user takes that user's name. Pure functions are offered as they are (staticmethod);
the packages under lab/ take a Runtime and never import this module, so there is no cycle.
"""

from __future__ import annotations

import platform
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import yaml
from transformers import AutoConfig

from lab.core import access
from lab.core.device import memory_info
from lab.core.settings import EMBEDDED_MODEL
from lab.core.users import private_file, workspace_dir
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA, REPO_ROOT
from lab.core.spaces import refuse_training_on_zero_gpu
from lab.core.users import LOCAL_USER, check_job_owner, check_name, list_uploads, load_users, save_upload, \
    upload_path, uploads_dir, user_of
from lab.explain import calculators, catalog
from lab.explain import sweeps
from lab.explain.sweeps.config import grid_size
from lab.explain.sweeps.run import sweep_owner
from lab.inference import adapters, arena, endpoints
from lab.inference.arena import ArenaColumn
from lab.inference.models import materialise_embedded, resolve_model_path
from lab.inference.runtime import Runtime
from lab.knowledge import compare, evaluation
from lab.knowledge.compare import CompareConfig, MethodUpdate
from lab.knowledge import disk
from lab.knowledge.documents import Document, load_document
from lab.training import configs
from lab.training.configs.base import TrainConfig, field_docs
from lab.training.configs.pretrain import SCRATCH, TRAIN_TOKENIZER, PretrainConfig
from lab.training.configs.reward import RewardConfig
from lab.training.data import builder
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


class Engine(Runtime):
    METHODS = compare.METHODS
    """Knowledge methods that need no adapter; `ft:<adapter>` adds a fine-tuned one."""
    SCORES = evaluation.SCORES
    MAX_ARENA_COLUMNS = arena.MAX_COLUMNS
    BUNDLED_QA = BUNDLED_QA

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._jobs: job_runner.JobRunner | None = None
        self._jobs_lock = threading.Lock()
        disk.set_cap(self.settings.data_dir / "knowledge", int(self.settings.knowledge_cache_gb * 2**30))

    def info(self) -> dict:
        """Everything the System tab and `python -m lab info` show."""
        mem = memory_info(self.device.device)
        info = {"python": platform.python_version(), "torch": torch.__version__,
                "device": self.device.device, "dtype": str(self.device.dtype).removeprefix("torch."),
                "attn_implementation": self.device.attn_implementation,
                "gpu_name": torch.cuda.get_device_name(0) if self.device.device == "cuda" else None,
                "memory_mb": {k: round(v / 2**20) for k, v in mem.items()},
                "data_dir": str(self.settings.data_dir), "default_model": self.settings.model_id,
                "load_in_4bit": self.settings.load_in_4bit, "sign_in": bool(self.settings.auth)}
        return info | {"session": self.stats()}

    def memory_info(self) -> dict[str, float]:
        """Total and free bytes of the device models run on."""
        return memory_info(self.device.device)

    def prepare_embedded(self) -> Path:
        """Convert the embedded model into <data>/models once, so later loads are fast (`python -m lab prepare`)."""
        return materialise_embedded(self.settings.subdir("models"))

    def close(self) -> None:
        """Stop the job runner's polling thread if this engine started one; jobs it launched keep running."""
        if self._jobs is not None:
            self._jobs.close()

    # ---- users and their uploads ------------------------------------------------------------------
    user_of = staticmethod(user_of)

    def sign_in_users(self) -> list[tuple[str, str]]:
        """The (user, password) pairs the web app asks for (LAB_AUTH and LAB_USERS_FILE); empty: no sign-in."""
        return load_users(self.settings)

    def uploads(self, user: str) -> list[str]:
        """The names of `user`'s own uploads."""
        return list_uploads(self.settings, user)

    def save_upload(self, user: str, source: str | Path) -> Document:
        """Check an uploaded file (size, type, content, the user's disk quota), then keep it in `user`'s workspace,
        readable by the lab's own user only."""
        name, size = check_name(Path(source).name, "File name"), Path(source).stat().st_size
        access.check_upload_size(self.settings, name, size)
        doc = load_document(source)
        replaced = uploads_dir(self.settings, user) / name  # the same name again replaces the old copy
        access.check_workspace_quota(self.settings, user, size - (replaced.stat().st_size if replaced.is_file() else 0))
        save_upload(self.settings, user, source)
        return doc

    def _keep_within_quota(self, user: str, written: Sequence[Path]) -> None:
        """Make files just written for `user` private; remove them again when they put the workspace over quota."""
        for path in written:
            private_file(path)
        try:
            access.check_workspace_quota(self.settings, user)
        except access.QuotaError:
            for path in written:
                path.unlink(missing_ok=True)
            raise

    def open_upload(self, user: str, name: str) -> Document:
        """One of `user`'s uploads; nobody else's can be named."""
        return load_document(upload_path(self.settings, user, name))

    # ---- knowledge: documents, compare, evaluation --------------------------------------------------
    def bundled_document(self) -> Document:
        return load_document(BUNDLED_DOC)

    load_document = staticmethod(load_document)

    def compare_methods(self) -> list[str]:
        """What Compare can run now: the plain methods and one `ft:<name>` per trained adapter."""
        return [*compare.METHODS, *(f"{compare.ADAPTER_PREFIX}{name}" for name in self.adapter_names())]

    def stream_compare(self, doc: Document, question: str, methods: str | Sequence[str], cfg: CompareConfig | None = None,
                caller: str | None = None) -> Iterator[MethodUpdate]:
        """Stream every method's answer to one question about `doc`, with its costs."""
        return compare.stream_compare(self, doc, question, methods, cfg, caller=caller)

    load_qa = staticmethod(evaluation.load_qa)

    def evaluate(self, doc: Document, items: Sequence[evaluation.QAItem], methods: str | Sequence[str],
                 cfg: CompareConfig | None = None, progress: Progress | None = None) -> dict:
        """Score a QA set through several methods (exact match, F1, ROUGE-L, BLEU, latency)."""
        return evaluation.evaluate(self, doc, items, methods, cfg, progress)

    def export_evaluation(self, result: dict, user: str, name: str) -> tuple[Path, Path]:
        """Write an evaluation as <name>.json and <name>.csv in `user`'s workspace, where it stays."""
        folder = workspace_dir(self.settings, user, "evaluations")
        stem = check_name(name, "Export name")
        access.check_workspace_quota(self.settings, user)  # already full: refused before anything is written
        written = (evaluation.write_json(result, folder / f"{stem}.json"),
                   evaluation.write_csv(result["rows"], folder / f"{stem}.csv"))
        self._keep_within_quota(user, written)
        return written

    # Anywhere the caller chooses (the command line's --out and --csv); a tab uses export_evaluation.
    write_evaluation_json = staticmethod(evaluation.write_json)
    write_evaluation_csv = staticmethod(evaluation.write_csv)

    # ---- arena ----------------------------------------------------------------------------------------
    def arena_models(self) -> list[str]:
        """The default model, one entry per trained adapter on it and every configured endpoint, as the Arena's
        dropdowns offer them."""
        return list(dict.fromkeys([*arena.model_choices(self), *self.endpoint_models()]))

    def endpoint_models(self) -> list[str]:
        """`endpoint:<name>` for every remote OpenAI-compatible server in LAB_ENDPOINTS (vLLM, transformers serve)."""
        return endpoints.model_ids(self.settings)

    def playground_models(self) -> list[str]:
        """What the Playground's model box offers: the default model and every configured endpoint."""
        return list(dict.fromkeys([self.settings.model_id, *self.endpoint_models()]))

    def stream_arena(self, prompt: str, columns: Sequence[ArenaColumn], histories: Sequence[list[dict]],
              caller: str | None = None) -> Iterator:
        """Stream one prompt to every column, each with its own settings and history."""
        return arena.stream_arena(self, prompt, columns, histories, caller=caller)

    arena_transcript_json = staticmethod(arena.transcript_json)
    arena_transcript_markdown = staticmethod(arena.transcript_markdown)

    # ---- training: configs, jobs, adapters, datasets --------------------------------------------------
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
                self._jobs = job_runner.JobRunner(self.settings.subdir("jobs").parent, sessions=self.sessions)
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

    def list_adapters(self) -> list[adapters.Adapter]:
        """Every trained adapter, newest first."""
        return adapters.list_adapters(self.settings.data_dir)

    def adapter_names(self) -> list[str]:
        return adapters.available_adapters(self.settings.data_dir)

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

    # ---- explain: catalog, calculators, sweeps -----------------------------------------------------
    CATALOG_GROUPS = catalog.GROUPS
    catalog_entries = staticmethod(catalog.entries)
    catalog_search = staticmethod(catalog.search)
    catalog_entry = staticmethod(catalog.get)
    SCHEDULER_TYPES = calculators.SCHEDULER_TYPES
    OPTIMIZER_STATES = calculators.OPTIMIZER_STATES
    ACTIVATIONS = (*calculators.GATED_ACTIVATIONS, *calculators.PLAIN_ACTIVATIONS)
    MEMORY_ASSUMPTIONS = calculators.MEMORY_ASSUMPTIONS
    batch_math = staticmethod(calculators.batch_math)
    lr_curve = staticmethod(calculators.lr_curve)
    lora_scale = staticmethod(calculators.lora_scale)
    memory_estimate = staticmethod(calculators.memory_estimate)
    memory_verdict = staticmethod(calculators.verdict)
    architecture_params = staticmethod(calculators.architecture_params)
    format_bytes = staticmethod(calculators.format_bytes)

    def explain(self, name: str) -> str:
        """The catalog entry for a knob, as Markdown (what `python -m lab explain NAME` prints)."""
        return catalog.render_markdown(catalog.get(name))

    def trainable_params(self, model_id: str | None, r: int, preset: str) -> calculators.TrainableParams:
        """Trainable and total parameters of LoRA rank `r` on `preset` layers of a model (the default when empty)."""
        source = resolve_model_path(model_id or self.settings.model_id, self.settings.data_dir / "models")
        return calculators.trainable_params(source, r, preset)

    def training_memory(self, model_id: str | None, mode: str, bits: int, optimizer: str, batch: int, seq_len: int,
                        grad_checkpointing: bool, r: int, preset: str
                        ) -> tuple[calculators.MemoryEstimate, int, calculators.Verdict]:
        """Training memory of a model (the default when empty), `mode` 'full' or 'lora' (rank `r` on `preset`
        layers), against the free memory of this process's device: (estimate, free bytes, verdict)."""
        source = resolve_model_path(model_id or self.settings.model_id, self.settings.data_dir / "models")
        cfg = AutoConfig.from_pretrained(source)
        adapted = calculators.trainable_params(source, r, preset)
        n_params = adapted.total - adapted.trainable  # the base model alone
        est = calculators.memory_estimate(
            n_params, n_params if mode == "full" else adapted.trainable, bits, optimizer, batch, seq_len,
            cfg.hidden_size, cfg.num_hidden_layers, grad_checkpointing, d_ff=cfg.intermediate_size,
            n_heads=cfg.num_attention_heads, n_kv_heads=cfg.num_key_value_heads, vocab_size=cfg.vocab_size,
            lora_r=r, lora_modules=preset)
        mem = self.memory_info()
        free = int(mem.get("gpu_free", mem["ram_available"]))
        return est, free, calculators.verdict(est.total, free)

    SUGGESTED_SWEEPS = sweeps.SUGGESTED_GRIDS
    suggest_sweep = staticmethod(sweeps.suggest_sweep)
    sweep_to_dict = staticmethod(sweeps.sweep_to_dict)

    def sweep_from_dict(self, data: Any, source: str = "sweep") -> sweeps.SweepConfig:
        """A sweep from a mapping (the Explain tab's editor). Its base is a preset name or an inline config, never a
        path; a grid over LAB_MAX_SWEEP_POINTS is refused before any point is built."""
        if isinstance(data, dict):
            access.check_sweep_points(self.settings, grid_size(data.get("grid")))
        return sweeps.sweep_from_dict(data, source)

    def load_sweep_file(self, path: str | Path) -> sweeps.SweepConfig:
        """A sweep YAML file (the command line); a YAML error names the file and the place, never a line of it."""
        return self.sweep_from_dict(access.load_yaml_file(path), str(path))

    def list_sweeps(self) -> list[dict]:
        return sweeps.list_sweeps(self.settings.data_dir)

    def start_sweep(self, sweep: sweeps.SweepConfig, user: str = LOCAL_USER) -> str:
        """Queue every point of a sweep as a job owned by `user`; returns the sweep id. Refused before anything is
        written when the grid is over LAB_MAX_SWEEP_POINTS, the user is at LAB_MAX_QUEUED_JOBS, or a point's
        config (or eval_qa) names a path the user may not read, exactly as submit_job checks a job."""
        refuse_training_on_zero_gpu()
        access.check_sweep_points(self.settings, grid_size(sweep.grid))
        access.check_queued_jobs(self.settings, user, self.jobs.list())
        for point in sweep.points():
            self.check_config_paths(point.config, user)
        if sweep.eval_qa is not None and user != LOCAL_USER:
            access.allowed_path(self.settings, user, sweep.eval_qa, "eval_qa")
        return sweeps.start_sweep(sweep, self.settings.data_dir, self.jobs, owner=user)

    def resume_sweep(self, sweep_id: str, user: str = LOCAL_USER) -> dict[str, str]:
        """Re-attach a sweep to its jobs after a restart (rerun what did not finish); point label -> what was done.
        Only the user who started it (or an admin, LAB_ADMINS) may."""
        refuse_training_on_zero_gpu()
        owner = sweep_owner(sweep_id, self.settings.data_dir)
        if owner != user and not access.is_admin(self.settings, user):
            raise PermissionError(f"Sweep {sweep_id} belongs to {owner}; only they (or an admin, LAB_ADMINS) can "
                                  "resume it.")
        return sweeps.resume_sweep(sweep_id, self.settings.data_dir, self.jobs)

    def finish_sweep(self, sweep_id: str, progress: Progress | None = None,
                     timeout_s: float = 24 * 3600) -> sweeps.SweepReport:
        """Block until every point's job ends, score the adapters on the sweep's QA set, and decide."""
        return sweeps.finish_sweep(sweep_id, self.settings.data_dir, self.jobs, self, progress, timeout_s)

    def sweep_results(self, sweep_id: str) -> list[dict]:
        return sweeps.sweep_results(sweep_id, self.settings.data_dir)

    def sweep_curves(self, sweep_id: str) -> list[dict]:
        return sweeps.overlay_curves(sweep_id, self.settings.data_dir)

    def sweep_decision(self, sweep_id: str, rows: list[dict] | None = None) -> sweeps.Decision:
        return sweeps.sweep_decision(sweep_id, self.settings.data_dir, rows)

    def export_sweep(self, sweep_id: str, path: str | Path) -> Path:
        return sweeps.export_csv(self.sweep_results(sweep_id), path)
