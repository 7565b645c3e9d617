"""Sweeps: a small grid over one training config, run as a group of jobs, read back as a table and a decision.

    python -m lab sweep assets/sweeps/lora_rank.yaml --csv rank.csv
    python -m lab sweep --resume 20261121-120000-lora_rank-1a2b
    python -m lab sweep --suggest packing --plan --json

Modules, each importing only the ones before it:
- tokens: a job's data in rows, tokens and TRL-packed rows (for sweeps at an equal data budget).
- config: SweepConfig (base, grid, ties, overrides, budget, rule, metric), its points, YAML in and
  out, the refusal of points that compute the same thing, and the suggested first grids.
- plan: per point its overrides, steps, examples, tokens and LoRA scale, and the model-aware check.
- decide: a decision rule of RULES applied to result rows, with the sentences that say why.
- run: the sweep folder <data>/sweeps/<id>/, one job per point (owned by the user who started
  the sweep), start/resume/wait/finish, the results table, loss curves, held-out QA scores, CSV.

This package gathers their public names so the engine, the CLI, the Explain tab and the tests
call the same functions: `from lab.explain import sweeps; sweeps.start_sweep(...)`.
"""

from lab.explain.sweeps.config import (
                                       BUDGETS,
                                       DEFAULT_BASE,
                                       METRICS,
                                       QUICK_OVERRIDES,
                                       RULE_FOR_KNOB,
                                       RULES,
                                       SUGGESTED_GRIDS,
                                       SweepConfig,
                                       SweepPoint,
                                       Tie,
                                       effective_settings,
                                       load_sweep_file,
                                       suggest_sweep,
                                       sweep_from_dict,
                                       sweep_to_dict,
)
from lab.explain.sweeps.decide import Decision, decide
from lab.explain.sweeps.plan import PlannedPoint, check_effective, fill_packing, plan_sweep, suggest
from lab.explain.sweeps.run import (
                                       RESULT_FIELDS,
                                       Progress,
                                       SweepReport,
                                       evaluate_sweep,
                                       export_csv,
                                       finish_sweep,
                                       list_sweeps,
                                       load_sweep,
                                       overlay_curves,
                                       resume_sweep,
                                       run_sweep,
                                       start_sweep,
                                       sweep_decision,
                                       sweep_dir,
                                       sweep_results,
                                       wait_sweep,
)
from lab.explain.sweeps.tokens import TokenProfile, token_profile

__all__ = [
    "BUDGETS", "effective_settings", "PlannedPoint", "check_effective", "fill_packing", "plan_sweep", "suggest",
    "TokenProfile", "token_profile",
    "DEFAULT_BASE", "METRICS", "QUICK_OVERRIDES", "RULE_FOR_KNOB", "RULES", "SUGGESTED_GRIDS", "SweepConfig",
    "SweepPoint", "Tie", "load_sweep_file", "suggest_sweep", "sweep_from_dict", "sweep_to_dict",
    "Decision", "decide",
    "RESULT_FIELDS", "Progress", "SweepReport", "evaluate_sweep", "export_csv", "finish_sweep", "list_sweeps",
    "load_sweep", "overlay_curves", "resume_sweep", "run_sweep", "start_sweep", "sweep_decision", "sweep_dir",
    "sweep_results", "wait_sweep",
]
