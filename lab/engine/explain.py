"""The Engine's Explain operations: the catalog, live calculators and sweeps (a grid of jobs and a decision)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoConfig

from lab.core import access
from lab.core.spaces import refuse_training_on_zero_gpu
from lab.core.users import LOCAL_USER
from lab.engine.training import Progress, TrainingOps
from lab.explain import calculators, catalog, sweeps
from lab.explain.sweeps.config import grid_size
from lab.explain.sweeps.run import sweep_owner
from lab.inference.models import resolve_model_path


class ExplainOps(TrainingOps):
    """Explainers read the catalog; sweeps are jobs, checked exactly as submit_job checks one."""
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

    catalog_lookup = staticmethod(catalog.lookup)

    def explain(self, name: str, kind: str | None = None) -> str:
        """The catalog entry for a knob, as Markdown (what `python -m lab explain NAME [--trainer KIND]` prints).
        With `kind`, the entry for that trainer's config field; a name that means different knobs per trainer
        and no kind to settle it gives the list of its meanings, each entry in full."""
        try:
            return catalog.render_markdown(catalog.lookup(name, kind))
        except catalog.AmbiguousName:
            return catalog.render_meanings(name)

    def trainable_params(self, model_id: str | None, r: int, preset: str,
                         user: str = LOCAL_USER) -> calculators.TrainableParams:
        """Trainable and total parameters of LoRA rank `r` on `preset` layers of a model (the default when empty);
        a model folder `user` may not read is refused."""
        self.check_model_access(model_id, user)
        source = resolve_model_path(model_id or self.settings.model_id, self.settings.data_dir / "models")
        return calculators.trainable_params(source, r, preset)

    def training_memory(self, model_id: str | None, mode: str, bits: int, optimizer: str, batch: int, seq_len: int,
                        grad_checkpointing: bool, r: int, preset: str, autocast: bool = True,
                        user: str = LOCAL_USER) -> tuple[calculators.MemoryEstimate, int, calculators.Verdict]:
        """Training memory of a model (the default when empty), `mode` 'full' or 'lora' (rank `r` on `preset`
        layers), against the free memory of this process's device: (estimate, free bytes, verdict).

        bits is how the base's weights are stored (full fine-tuning: 32 = fp32 master weights, 16 = pure bf16);
        autocast = matmuls in bf16, as the lab trains on a GPU. A 4- or 8-bit base keeps its embeddings, head and
        norms in 16 bits, counted on the model. A model folder `user` may not read is refused."""
        self.check_model_access(model_id, user)
        source = resolve_model_path(model_id or self.settings.model_id, self.settings.data_dir / "models")
        cfg = AutoConfig.from_pretrained(source)
        adapted = calculators.trainable_params(source, r, preset)
        n_params = adapted.total - adapted.trainable  # the base model alone
        est = calculators.memory_estimate(
            n_params, n_params if mode == "full" else adapted.trainable, bits, optimizer, batch, seq_len,
            cfg.hidden_size, cfg.num_hidden_layers, grad_checkpointing, d_ff=cfg.intermediate_size,
            n_heads=cfg.num_attention_heads, n_kv_heads=cfg.num_key_value_heads, vocab_size=cfg.vocab_size,
            lora_r=r, lora_modules=preset, autocast=autocast,
            unquantized_params=calculators.unquantized_params(cfg) if bits in (4, 8) else 0)
        mem = self.memory_info()
        free = int(mem.get("gpu_free", mem["ram_available"]))
        return est, free, calculators.verdict(est.total, free)

    SUGGESTED_SWEEPS = sweeps.SUGGESTED_GRIDS
    sweep_to_dict = staticmethod(sweeps.sweep_to_dict)

    @property
    def _models_dir(self) -> Path:
        return self.settings.data_dir / "models"

    def suggest_sweep(self, knob: str, base: str | dict = sweeps.DEFAULT_BASE,
                      overrides: dict | None = None) -> sweeps.SweepConfig:
        """The suggested first sweep for a knob, its controlled variables filled in (packing measured on the data);
        ValueError saying why when its points would be identical jobs (bias on a model without biases, rsLoRA at
        matched gain)."""
        return sweeps.suggest(knob, self._models_dir, base, overrides)

    def plan_sweep(self, sweep: sweeps.SweepConfig) -> list[dict]:
        """Per point, without running it: overrides, max_steps, examples, planned tokens and LoRA scale."""
        sweeps.check_effective(sweep, self._models_dir)
        return [p.as_dict() for p in sweeps.plan_sweep(sweep, self._models_dir)]

    def sweep_from_dict(self, data: Any, source: str = "sweep") -> sweeps.SweepConfig:
        """A sweep from a mapping (the Explain tab's editor). Its base is a preset name or an inline config, never a
        path; a grid over LAB_MAX_SWEEP_POINTS is refused before any point is built."""
        if isinstance(data, dict):
            access.check_sweep_points(self.settings, grid_size(data.get("grid")))
            data = sweeps.fill_packing(data, self._models_dir)
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
        sweeps.check_effective(sweep, self._models_dir)
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
