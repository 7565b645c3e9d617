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
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import yaml
from transformers import AutoConfig

from lab.core.device import memory_info
from lab.core.settings import BUNDLED_DOC, BUNDLED_QA, REPO_ROOT
from lab.core.spaces import refuse_training_on_zero_gpu
from lab.core.users import LOCAL_USER, check_job_owner, check_name, list_uploads, load_users, save_upload, \
    upload_path, uploads_dir, user_of
from lab.explain import calculators, catalog
from lab.explain import sweeps
from lab.inference import adapters, arena
from lab.inference.arena import ArenaColumn
from lab.inference.models import materialise_embedded, resolve_model_path
from lab.inference.runtime import Runtime
from lab.knowledge import compare, evaluation
from lab.knowledge.compare import CompareConfig, MethodUpdate
from lab.knowledge.documents import Document, load_document
from lab.training import configs
from lab.training.configs.base import TrainConfig, field_docs
from lab.training.data import builder
from lab.training.jobs import runner as job_runner

Progress = Callable[[int, int, str], None]
PRESETS_DIR = REPO_ROOT / "assets" / "presets"


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
        """Check an uploaded file (type, size, content), then keep it in `user`'s workspace."""
        doc = load_document(source)
        save_upload(self.settings, user, source)
        return doc

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
        folder = self.settings.subdir(f"users/{check_name(user, 'User name')}/evaluations")
        stem = check_name(name, "Export name")
        return (evaluation.write_json(result, folder / f"{stem}.json"),
                evaluation.write_csv(result["rows"], folder / f"{stem}.csv"))

    # Anywhere the caller chooses (the command line's --out and --csv); a tab uses export_evaluation.
    write_evaluation_json = staticmethod(evaluation.write_json)
    write_evaluation_csv = staticmethod(evaluation.write_csv)

    # ---- arena ----------------------------------------------------------------------------------------
    def arena_models(self) -> list[str]:
        """The default model and one entry per trained adapter on it, as the Arena's dropdowns offer them."""
        return arena.model_choices(self)

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
    load_config = staticmethod(configs.load_config)
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

    def submit_job(self, cfg: TrainConfig, user: str = LOCAL_USER) -> str:
        """Queue a training job owned by `user` (refused on a ZeroGPU Space, which cannot train)."""
        refuse_training_on_zero_gpu()
        return self.jobs.submit(cfg, owner=user)

    def control_job(self, action: str, job_id: str, user: str = LOCAL_USER) -> dict:
        """Stop, kill or resume a job; only its owner may."""
        if action not in ("stop", "kill", "resume"):
            raise ValueError(f"Unknown job action {action!r}; use stop, kill or resume.")
        check_job_owner(self.jobs.status(job_id), user, action)
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
        return builder.write_jsonl(pairs, folder / check_name(f"{(name or 'qa').strip()}.jsonl", "File name"))

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
    sweep_from_dict = staticmethod(sweeps.sweep_from_dict)
    load_sweep_file = staticmethod(sweeps.load_sweep_file)

    def list_sweeps(self) -> list[dict]:
        return sweeps.list_sweeps(self.settings.data_dir)

    def start_sweep(self, sweep: sweeps.SweepConfig, user: str = LOCAL_USER) -> str:
        """Queue every point of a sweep as a job owned by `user`; returns the sweep id."""
        refuse_training_on_zero_gpu()
        return sweeps.start_sweep(sweep, self.settings.data_dir, self.jobs, owner=user)

    def resume_sweep(self, sweep_id: str) -> dict[str, str]:
        """Re-attach a sweep to its jobs after a restart (rerun what did not finish); point label -> what was done."""
        refuse_training_on_zero_gpu()
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
