"""Sweeps: a small grid over one training config, run as jobs, read back as a table and a decision.

    python -m lab sweep --suggest packing --plan --json

A sweep's points are jobs (lab/engine/jobs.py), checked exactly as Jobs.submit checks one; only the user who
started a sweep (or an admin) resumes it. Finishing a sweep scores its adapters through the Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.core import access
from lab.core.spaces import refuse_training_on_zero_gpu
from lab.core.users import LOCAL_USER
from lab.engine.jobs import Jobs, Progress
from lab.explain import sweeps
from lab.explain.sweeps.config import grid_size
from lab.explain.sweeps.run import sweep_owner
from lab.inference.runtime import Runtime


class Sweeps:
    """Sweeps under <data>/sweeps, each owned by the user who started it."""
    SUGGESTED = sweeps.SUGGESTED_GRIDS

    def __init__(self, runtime: Runtime, jobs: Jobs) -> None:
        self.runtime, self.settings, self.jobs = runtime, runtime.settings, jobs
        self._models_dir = self.settings.data_dir / "models"

    def to_dict(self, sweep: sweeps.SweepConfig) -> dict[str, Any]:
        """A sweep as the mapping its YAML holds (the Explain tab's editor)."""
        return sweeps.sweep_to_dict(sweep)

    def suggest(self, knob: str, base: str | dict = sweeps.DEFAULT_BASE,
                overrides: dict | None = None) -> sweeps.SweepConfig:
        """The suggested first sweep for a knob, its controlled variables filled in (packing measured on the data);
        ValueError saying why when its points would be identical jobs (bias on a model without biases, rsLoRA at
        matched gain)."""
        return sweeps.suggest(knob, self._models_dir, base, overrides)

    def plan(self, sweep: sweeps.SweepConfig) -> list[dict]:
        """Per point, without running it: overrides, max_steps, examples, planned tokens and LoRA scale."""
        sweeps.check_effective(sweep, self._models_dir)
        return [p.as_dict() for p in sweeps.plan_sweep(sweep, self._models_dir)]

    def from_dict(self, data: Any, source: str = "sweep") -> sweeps.SweepConfig:
        """A sweep from a mapping (the Explain tab's editor). Its base is a preset name or an inline config, never a
        path; a grid over LAB_MAX_SWEEP_POINTS is refused before any point is built."""
        if isinstance(data, dict):
            access.check_sweep_points(self.settings, grid_size(data.get("grid")))
            data = sweeps.fill_packing(data, self._models_dir)
        return sweeps.sweep_from_dict(data, source)

    def load_file(self, path: str | Path) -> sweeps.SweepConfig:
        """A sweep YAML file (the command line); a YAML error names the file and the place, never a line of it."""
        return self.from_dict(access.load_yaml_file(path), str(path))

    def all(self) -> list[dict]:
        return sweeps.list_sweeps(self.settings.data_dir)

    def start(self, sweep: sweeps.SweepConfig, user: str = LOCAL_USER) -> str:
        """Queue every point of a sweep as a job owned by `user`; returns the sweep id. Refused before anything is
        written when the grid is over LAB_MAX_SWEEP_POINTS, the user is at LAB_MAX_QUEUED_JOBS, or a point's
        config (or eval_qa) names a path the user may not read, exactly as Jobs.submit checks a job."""
        refuse_training_on_zero_gpu()
        access.check_sweep_points(self.settings, grid_size(sweep.grid))
        access.check_queued_jobs(self.settings, user, self.jobs.all())
        sweeps.check_effective(sweep, self._models_dir)
        for point in sweep.points():
            self.jobs.check_config_paths(point.config, user)
        if sweep.eval_qa is not None and user != LOCAL_USER:
            access.allowed_path(self.settings, user, sweep.eval_qa, "eval_qa")
        return sweeps.start_sweep(sweep, self.settings.data_dir, self.jobs.runner, owner=user)

    def resume(self, sweep_id: str, user: str = LOCAL_USER) -> dict[str, str]:
        """Re-attach a sweep to its jobs after a restart (rerun what did not finish); point label -> what was done.
        Only the user who started it (or an admin, LAB_ADMINS) may."""
        refuse_training_on_zero_gpu()
        owner = sweep_owner(sweep_id, self.settings.data_dir)
        if refusal := access.owner_refusal(self.settings.admin_names(), user, owner, f"Sweep {sweep_id}", "resume"):
            raise PermissionError(refusal)
        return sweeps.resume_sweep(sweep_id, self.settings.data_dir, self.jobs.runner)

    def finish(self, sweep_id: str, progress: Progress | None = None,
               timeout_s: float = 24 * 3600) -> sweeps.SweepReport:
        """Block until every point's job ends, score the adapters on the sweep's QA set, and decide."""
        return sweeps.finish_sweep(sweep_id, self.settings.data_dir, self.jobs.runner, self.runtime, progress,
                                   timeout_s)

    def results(self, sweep_id: str) -> list[dict]:
        return sweeps.sweep_results(sweep_id, self.settings.data_dir)

    def curves(self, sweep_id: str) -> list[dict]:
        return sweeps.overlay_curves(sweep_id, self.settings.data_dir)

    def decision(self, sweep_id: str, rows: list[dict] | None = None) -> sweeps.Decision:
        return sweeps.sweep_decision(sweep_id, self.settings.data_dir, rows)

    def export(self, sweep_id: str, path: str | Path) -> Path:
        return sweeps.export_csv(self.results(sweep_id), path)
