"""Sweeps: a small grid over one training config, run as a group of jobs, read back as a table and a decision.

    python -m lab sweep assets/sweeps/lora_rank.yaml --csv rank.csv
    python -m lab sweep --resume 20261121-120000-lora_rank-1a2b

A sweep is a base job config (a preset YAML or the same mapping inline), `overrides` applied to
every point, a `grid` of knob -> values, and `tie` rules that derive a knob from another
(lora_alpha: "2*r" holds alpha/r at 2 while r moves). Each point is an ordinary job (lab/training/jobs/runner.py):
it queues, runs, stops and resumes like any other. The sweep's folder <data>/sweeps/<id>/ holds
sweep.yaml (the config with its base inlined), points.json (point -> job id) and qa.json
(held-out QA scores per job); the rest is read from the jobs' own folders, so a sweep's table
is rebuilt from disk after a restart.

A decision rule (RULES) turns the table into a choice and a few sentences saying why.
"""

from __future__ import annotations

import copy
import csv
import difflib
import itertools
import json
import math
import os
import re
import secrets
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from lab.explain import catalog
from lab.training.jobs.runner import FINAL_STATES, JobRunner, job_dir, job_status, list_jobs
from lab.core.settings import REPO_ROOT
from lab.core.users import LOCAL_USER
from lab.training.kinds.common import STATUS_FILE, read_metrics
from lab.training.configs import CONFIG_KINDS, config_from_dict
from lab.training.configs.base import TrainConfig

RULES: dict[str, str] = {
    "smallest_best": "Keep the smallest value that reaches the best validation metric. A run reaches it when "
                     "it is within the tolerance of the best run; a larger value that is only as good costs "
                     "parameters, memory and time for nothing. (The guide's rule for LoRA rank.)",
    "largest_stable": "Keep the largest value that trains without diverging and has the lowest eval loss. A run "
                      "diverges when its training loss becomes NaN or infinite or ends above where it started; "
                      "among the stable runs within the tolerance of the lowest eval loss, the largest value "
                      "wins, because it learns the most per step. (The guide's rule for learning rate.)",
    "lowest_eval_loss": "Keep the run with the best validation metric; runs within the tolerance of it are "
                        "named as ties, since a difference that small is noise on a short run.",
}
"""Decision rules by name, each in words the UI shows beside the table."""

RULE_FOR_KNOB = {"r": "smallest_best", "gradient_accumulation_steps": "smallest_best",
                 "learning_rate": "largest_stable"}
"""What decision 'auto' applies to the sweep's first grid knob; any other knob gets lowest_eval_loss."""

METRICS: dict[str, tuple[str, str, bool]] = {
    "eval_loss": ("final_eval_loss", "final eval loss", False),
    "best_eval_loss": ("best_eval_loss", "best eval loss", False),
    "qa_f1": ("qa_f1", "held-out QA token F1", True),
    "train_loss": ("final_train_loss", "final train loss", False),
}
"""metric name -> (row column, words, higher is better)."""

RESULT_FIELDS = ("point", "state", "job_id", "step", "max_steps", "final_train_loss", "best_eval_loss",
                 "final_eval_loss", "qa_f1", "qa_exact_match", "tokens_per_s", "peak_memory_mb", "trainable_params",
                 "diverged", "message")
"""Columns of a result row after the point's knob columns (CSV order)."""

SUGGESTED_GRIDS: dict[str, dict[str, Any]] = {
    "r": {"grid": {"r": [8, 16, 32]}, "tie": {"lora_alpha": "2*r"}},
    "lora_alpha": {"grid": {"lora_alpha": [8, 16, 32, 64]}},
    "lora_dropout": {"grid": {"lora_dropout": [0.0, 0.05, 0.1]}},
    "learning_rate": {"grid": {"learning_rate": [1e-4, 2e-4, 4e-4, 8e-4]}},
    "lr_scheduler_type": {"grid": {"lr_scheduler_type": ["linear", "cosine", "constant_with_warmup"]}},
    "packing": {"grid": {"packing": [False, True]}},
    "gradient_accumulation_steps": {"grid": {"gradient_accumulation_steps": [1, 2, 4]}},
    "weight_decay": {"grid": {"weight_decay": [0.0, 0.01, 0.1]}},
    "bias": {"grid": {"bias": ["none", "lora_only", "all"]}},
    "use_rslora": {"grid": {"use_rslora": [False, True]}},
    "warmup_ratio": {"grid": {"warmup_ratio": [0.0, 0.05, 0.1]}, "overrides": {"warmup_steps": 0}},
}
"""A first grid per sweepable catalog entry (the Explain tab's "sweep this" button), following each
entry's how_to_tune."""

DEFAULT_BASE = "assets/presets/sft_lora_qa.yaml"
QUICK_OVERRIDES = {"max_steps": 20, "eval_steps": 10, "save_steps": 20}
"""A suggested sweep runs the bundled QA preset for 20 steps per point instead of its 55."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
_SWEEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_TIE = re.compile(rf"^\s*(?:(?P<factor>{_NUMBER})\s*\*\s*)?(?P<knob>[A-Za-z_][A-Za-z0-9_]*)\s*$"  # 2*r, r
                  rf"|^\s*(?P<literal>{_NUMBER})\s*$")  # 16
_NOT_SWEPT = {"kind": "it picks the trainer; sweep one kind at a time",
              "output_name": "the sweep names each point's adapter itself"}

Progress = Callable[[int, int, str], None]
"""progress(done, total, message), as in lab.knowledge.evaluation."""


def _resolve(path: str | Path) -> Path:
    """A path as the lab's configs use them: absolute, or relative to the lab's folder (where assets/ is)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Tie:
    """A knob derived at each point: factor x the value of `knob`, or a constant when knob is None."""
    factor: int | float
    knob: str | None

    @classmethod
    def parse(cls, target: str, expr: Any) -> "Tie":
        """'2*r', '0.5 * r', 'r' or a number. Anything else is refused; nothing is ever evaluated."""
        if _is_number(expr):
            return cls(expr, None)
        match = _TIE.match(expr) if isinstance(expr, str) else None
        if match is None:
            raise ValueError(f"tie.{target}: {expr!r} is not '<number>*<knob>' (e.g. '2*r'), '<knob>' or a number")
        text = match["factor"] or match["literal"] or "1"
        factor = int(text) if text.isdigit() else float(text)
        return cls(factor, match["knob"])

    def value(self, point: dict[str, Any]) -> int | float:
        if self.knob is None:
            return self.factor
        source = point.get(self.knob)
        if not _is_number(source):
            raise ValueError(f"tie needs a number in {self.knob}, got {source!r}")
        return self.factor * source


@dataclass(frozen=True)
class SweepPoint:
    index: int
    """Position in the grid (the product of the knobs' lists, first knob slowest)."""
    values: dict[str, Any]
    """The grid knobs' values at this point, then the tied knobs' values."""
    label: str
    """'r=8, lora_alpha=16': how tables and plots name the point."""
    config: TrainConfig
    """The full job config of this point (output_name is set when it is submitted)."""


@dataclass
class SweepConfig:
    name: str
    """A short name for the sweep (letters, digits, '_' and '-', up to 32); the sweep id and its adapters'
    names start with it."""
    base: str | dict[str, Any]
    """The job config every point starts from: a job YAML path (e.g. assets/presets/sft_lora_qa.yaml; relative
    paths are relative to the lab's folder) or the same mapping inline."""
    grid: dict[str, list[Any]]
    """knob -> values to try, e.g. {r: [8, 16, 32]}. Several knobs give every combination (their product), so
    keep the grid small. The first knob is the one the decision rule is about."""
    tie: dict[str, str] = field(default_factory=dict)
    """Knobs computed at each point from a grid knob: '<number>*<knob>' ('2*r' holds lora_alpha / r at 2 as r
    moves), '<knob>', or a plain number. Nothing else is accepted and nothing is evaluated as code."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Fields set on the base for every point, e.g. fewer max_steps than the preset's full run."""
    decision: str = "auto"
    """How the winner is picked: smallest_best, largest_stable, lowest_eval_loss, or auto (smallest_best for r and
    gradient_accumulation_steps, largest_stable for learning_rate, lowest_eval_loss for anything else)."""
    metric: str = "auto"
    """The validation metric the rule compares: eval_loss (final), best_eval_loss, qa_f1 (needs eval_qa),
    train_loss, or auto (eval_loss when the runs have held-out data, else train_loss)."""
    tolerance: float = 0.01
    """How close to the best a run must be to count as reaching it, as a share of the best value (0.01 = within
    1%). A short run's metric moves by about that much from seed to seed."""
    eval_qa: str | None = None
    """Optional held-out QA JSONL ({"question", "answer"} lines) asked to each point's adapter after training;
    its token F1 becomes the qa_f1 column (needs a runtime: run_sweep(..., runtime=...) or evaluate_sweep)."""
    eval_qa_limit: int = 20
    """Questions of eval_qa asked per adapter (the first N)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"name may use letters, digits, '_' and '-' only (up to 32), got {self.name!r}")
        if not isinstance(self.grid, dict) or not self.grid:
            raise ValueError("grid is empty: give at least one knob with a list of values, e.g. {r: [8, 16, 32]}")
        self._base = self._load_base()
        kind = self._base.get("kind")
        if kind not in CONFIG_KINDS:
            raise ValueError(f"base: kind must be one of {', '.join(CONFIG_KINDS)}; got {kind!r}")
        known = [f.name for f in fields(CONFIG_KINDS[kind])]
        # Class defaults, so a tie can read a knob the base leaves out (lora_alpha: 2*r without r in the base).
        self._defaults = {f.name: f.default for f in fields(CONFIG_KINDS[kind]) if f.default is not MISSING}
        for where, mapping in (("grid", self.grid), ("tie", self.tie), ("overrides", self.overrides)):
            if not isinstance(mapping, dict):
                raise ValueError(f"{where} must be a mapping of knob: ..., got {mapping!r}")
            for knob in mapping:
                self._check_knob(where, knob, known, kind)
        for knob, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{knob} needs a non-empty list of values, got {values!r}")
            repeated = [v for i, v in enumerate(values) if v in values[:i]]
            if repeated:
                raise ValueError(f"grid.{knob} lists {repeated[0]!r} twice")
        self._ties = {target: Tie.parse(target, expr) for target, expr in self.tie.items()}
        for target, tie in self._ties.items():
            if target in self.grid:
                raise ValueError(f"tie.{target}: {target} is already in the grid; tie it or sweep it, not both")
            if tie.knob is not None and tie.knob not in known:
                raise ValueError(f"tie.{target}: unknown knob {tie.knob!r} in {self.tie[target]!r}")
            if tie.knob in self._ties:
                raise ValueError(f"tie.{target}: {tie.knob} is itself tied; tie to a grid knob instead")
        if self.decision not in ("auto", *RULES):
            raise ValueError(f"decision must be auto or one of {', '.join(RULES)}, got {self.decision!r}")
        if self.metric not in ("auto", *METRICS):
            raise ValueError(f"metric must be auto or one of {', '.join(METRICS)}, got {self.metric!r}")
        if not _is_number(self.tolerance) or not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be a share in [0, 1) such as 0.01, got {self.tolerance!r}")
        if self.eval_qa is not None and not _resolve(self.eval_qa).is_file():
            raise ValueError(f"eval_qa: QA file not found: {self.eval_qa!r}")
        if self.metric == "qa_f1" and self.eval_qa is None:
            raise ValueError("metric qa_f1 needs eval_qa, a held-out QA file to ask each adapter")
        if isinstance(self.eval_qa_limit, bool) or not isinstance(self.eval_qa_limit, int) or self.eval_qa_limit < 1:
            raise ValueError(f"eval_qa_limit must be a whole number >= 1, got {self.eval_qa_limit!r}")
        if self.rule in ("smallest_best", "largest_stable") and not all(map(_is_number, self.grid[self.knob])):
            raise ValueError(f"decision {self.rule} orders the values of {self.knob}, so they must be numbers; "
                             f"got {self.grid[self.knob]!r}")
        # The base, then every value alone (so an error names the one knob and value at fault), then every point.
        self._build({}, "the base with its overrides")
        for knob, values in self.grid.items():
            for value in values:
                self._build({knob: value}, f"grid value {knob}={value!r}")
        self.points()

    def _load_base(self) -> dict[str, Any]:
        if isinstance(self.base, dict):
            return copy.deepcopy(self.base)
        if not isinstance(self.base, str) or not self.base.strip():
            raise ValueError(f"base must be a job YAML path or a config mapping, got {self.base!r}")
        path = _resolve(self.base)
        if not path.is_file():
            raise ValueError(f"base: config file {self.base!r} does not exist")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"base: {self.base} does not hold a mapping of field: value")
        return data

    @staticmethod
    def _check_knob(where: str, knob: Any, known: list[str], kind: str) -> None:
        if knob in _NOT_SWEPT:
            raise ValueError(f"{where}: knob {knob!r} cannot be set by a sweep: {_NOT_SWEPT[knob]}")
        if knob not in known:
            try:  # the catalog knows what people call a knob ('rank', 'lr', 'alpha')
                alias = catalog.get(str(knob)).name
            except KeyError:
                alias = None
            close = [alias] if alias in known else difflib.get_close_matches(str(knob), known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{where}: unknown knob {knob!r} for a {kind} config{hint}")

    def _build(self, values: dict[str, Any], what: str) -> tuple[dict[str, Any], TrainConfig]:
        """(grid + tied values, config) of one point; an invalid result raises naming `what`."""
        data = self._base | copy.deepcopy(self.overrides) | copy.deepcopy(values)
        try:
            tied = {target: tie.value(self._defaults | data) for target, tie in self._ties.items()}
            return values | tied, config_from_dict(data | tied, "sweep")
        except ValueError as exc:
            raise ValueError(f"{what} makes the job config invalid: {str(exc).removeprefix('sweep: ')}") from None

    @property
    def knob(self) -> str:
        """The grid's first knob: the one the decision is about."""
        return next(iter(self.grid))

    @property
    def rule(self) -> str:
        return RULE_FOR_KNOB.get(self.knob, "lowest_eval_loss") if self.decision == "auto" else self.decision

    @property
    def base_config(self) -> dict[str, Any]:
        """The base as a mapping (read from its file when base is a path), before overrides."""
        return copy.deepcopy(self._base)

    def points(self) -> list[SweepPoint]:
        points = []
        for index, combo in enumerate(itertools.product(*self.grid.values())):
            grid_values = dict(zip(self.grid, combo))
            label = ", ".join(f"{k}={_fmt(v)}" for k, v in grid_values.items())
            values, cfg = self._build(grid_values, f"grid point {label}")
            label = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            points.append(SweepPoint(index, values, label, cfg))
        return points


def expand(sweep: SweepConfig) -> list[SweepPoint]:
    """Every point of the grid, in order, each with its validated job config."""
    return sweep.points()


def sweep_to_dict(sweep: SweepConfig) -> dict[str, Any]:
    """The sweep as saved in sweep.yaml: the base inlined, so a later change to the preset cannot change it."""
    return asdict(sweep) | {"base": sweep.base_config}


def sweep_from_dict(data: Any, source: str = "sweep") -> SweepConfig:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of field: value, got {type(data).__name__}")
    known = [f.name for f in fields(SweepConfig)]
    for key in data:
        if key not in known:
            raise ValueError(f"{source}: unknown key {key!r}; known: {', '.join(known)}")
    missing = [k for k in ("name", "base", "grid") if k not in data]
    if missing:
        raise ValueError(f"{source}: missing {missing[0]!r}")
    return SweepConfig(**data)


def load_sweep_file(path: str | Path) -> SweepConfig:
    """A sweep YAML such as assets/sweeps/lora_rank.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    return sweep_from_dict(data, str(path))


def suggest_sweep(knob: str, base: str | dict[str, Any] = DEFAULT_BASE,
                  overrides: dict[str, Any] | None = None) -> SweepConfig:
    """A ready first sweep over a catalog knob (SUGGESTED_GRIDS) on `base`, shortened by QUICK_OVERRIDES."""
    if knob not in SUGGESTED_GRIDS:
        raise KeyError(f"no suggested sweep for {knob!r}; sweepable: {', '.join(SUGGESTED_GRIDS)}")
    spec = SUGGESTED_GRIDS[knob]
    return SweepConfig(name=knob.replace(".", "_")[:32], base=base, grid=copy.deepcopy(spec["grid"]),
                       tie=dict(spec.get("tie", {})),
                       overrides=QUICK_OVERRIDES | spec.get("overrides", {}) | (overrides or {}))


# ---- the sweep folder ---------------------------------------------------------------------------
def sweep_dir(data_dir: str | Path, sweep_id: str) -> Path:
    """<data>/sweeps/<id>; ids that could leave that folder are refused."""
    if not isinstance(sweep_id, str) or not _SWEEP_ID.match(sweep_id) or ".." in sweep_id:
        raise ValueError(f"invalid sweep id {sweep_id!r}: use the id `sweep` printed")
    return Path(data_dir) / "sweeps" / sweep_id


def _existing(data_dir: str | Path, sweep_id: str) -> Path:
    folder = sweep_dir(data_dir, sweep_id)
    if not (folder / "points.json").is_file():
        raise ValueError(f"no sweep {sweep_id!r} in {Path(data_dir) / 'sweeps'}")
    return folder


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read_points(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "points.json").read_text())["points"]


def _save_points(folder: Path, points: list[dict[str, Any]]) -> None:
    _write_json(folder / "points.json", {"sweep_id": folder.name, "points": points})


def load_sweep(sweep_id: str, data_dir: str | Path) -> SweepConfig:
    folder = _existing(data_dir, sweep_id)
    return sweep_from_dict(yaml.safe_load((folder / "sweep.yaml").read_text(encoding="utf-8")), sweep_id)


def list_sweeps(data_dir: str | Path) -> list[dict[str, Any]]:
    """Every sweep, oldest first: id, name, knob and how many points each job state has."""
    root = Path(data_dir) / "sweeps"
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / "points.json").is_file():
            rows = sweep_results(folder.name, data_dir)
            states: dict[str, int] = {}
            for row in rows:
                states[row["state"]] = states.get(row["state"], 0) + 1
            meta = yaml.safe_load((folder / "sweep.yaml").read_text(encoding="utf-8"))
            out.append({"id": folder.name, "name": meta["name"], "knob": next(iter(meta["grid"])),
                        "points": len(rows), "states": states, "done": all(r["state"] in FINAL_STATES for r in rows)})
    return out


def _output_name(sweep_id: str, index: int) -> str:
    return f"{sweep_id}-p{index}"


def _submit(runner: JobRunner, sweep_id: str, point: SweepPoint, owner: str) -> str:
    # replace() re-runs __post_init__, so the output name is validated like any other field.
    return runner.submit(replace(point.config, output_name=_output_name(sweep_id, point.index)), owner=owner)


def _owner(folder: Path) -> str:
    """Who started the sweep (owner.txt; sweeps from before it was written belong to the local user)."""
    path = folder / "owner.txt"
    return path.read_text().strip() if path.is_file() else LOCAL_USER


def start_sweep(sweep: SweepConfig, data_dir: str | Path, runner: JobRunner, owner: str = LOCAL_USER) -> str:
    """Write the sweep folder and queue every point as a job owned by `owner`; returns the sweep id without
    waiting.

    The runner starts the jobs (max_running at a time); poll with sweep_results(sweep_id, data_dir).
    """
    points = sweep.points()  # validated again before anything is written or launched
    sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{sweep.name}-{secrets.token_hex(2)}"
    folder = sweep_dir(data_dir, sweep_id)
    folder.mkdir(parents=True)
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep_to_dict(sweep), sort_keys=False, allow_unicode=True))
    (folder / "owner.txt").write_text(owner)
    records = [{"index": p.index, "label": p.label, "values": p.values, "job_id": None, "replaced": []}
               for p in points]
    _save_points(folder, records)
    for point, record in zip(points, records):
        record["job_id"] = _submit(runner, sweep_id, point, owner)
        _save_points(folder, records)  # after each submit: a crash loses at most the job being created
    return sweep_id


def resume_sweep(sweep_id: str, data_dir: str | Path, runner: JobRunner) -> dict[str, str]:
    """Re-attach a sweep to its jobs after a restart; returns point label -> what was done.

    completed -> kept; queued or running -> attached (the runner carries on); failed before any
    training step, or no job at all -> a new job is submitted; stopped, or failed after training
    started -> the same job resumes from its last checkpoint. A point whose job id was never
    recorded is found by its adapter name, so no point ever gets a second job while one exists.
    """
    folder = _existing(data_dir, sweep_id)
    records = _read_points(folder)
    owner = _owner(folder)
    points = load_sweep(sweep_id, data_dir).points()
    by_output = {j.get("output_name"): j["id"] for j in list_jobs(data_dir) if j.get("output_name")}
    actions: dict[str, str] = {}
    for point, record in zip(points, records):
        job_id = record["job_id"] or by_output.get(_output_name(sweep_id, point.index))
        status = job_status(data_dir, job_id) if job_id and (job_dir(data_dir, job_id) / STATUS_FILE).exists() else None
        state = status["state"] if status else None
        if status is None:
            job_id, action = _submit(runner, sweep_id, point, owner), "submitted (it had no job)"
        elif state == "completed":
            action = "kept (completed)"
        elif state not in FINAL_STATES:
            action = f"attached ({state})"
        elif state == "failed" and not status.get("step"):
            record["replaced"].append(job_id)
            job_id, action = _submit(runner, sweep_id, point, owner), "resubmitted (failed before training)"
        else:
            runner.resume(job_id)
            action = f"resumed ({state} at step {status.get('step')})"
        record["job_id"] = job_id
        _save_points(folder, records)
        actions[record["label"]] = action
    return actions


def wait_sweep(sweep_id: str, data_dir: str | Path, runner: JobRunner, timeout_s: float = 24 * 3600,
               progress: Progress | None = None, after_each: Callable[[], Any] | None = None
               ) -> list[dict[str, Any]]:
    """Block until every point's job is final (TimeoutError after timeout_s); returns sweep_results.

    `after_each()` runs once each point's job has ended, while the next ones train (finish_sweep scores
    the new adapter there, so QA evaluation overlaps training instead of following it).
    """
    records = _read_points(_existing(data_dir, sweep_id))
    deadline = time.time() + timeout_s
    for done, record in enumerate(records):
        if progress:
            progress(done, len(records), f"waiting for {record['label']} (job {record['job_id']})")
        if record["job_id"]:
            runner.wait(record["job_id"], timeout_s=max(1.0, deadline - time.time()))
        if after_each:
            after_each()
    if progress:
        progress(len(records), len(records), "every point finished")
    return sweep_results(sweep_id, data_dir)


# ---- results ------------------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _row(record: dict[str, Any], status: dict[str, Any], metrics: list[dict[str, Any]],
         qa: dict[str, Any]) -> dict[str, Any]:
    losses = [r["loss"] for r in metrics if r.get("loss") is not None]
    evals = [r["eval_loss"] for r in metrics if r.get("eval_loss") is not None]
    speeds = [r["tokens_per_s"] for r in metrics if r.get("tokens_per_s")]
    # Diverged: a loss that is no longer a number, or training that ended worse than it began.
    diverged = (any(not _finite(v) for v in losses + evals)
                or (len(losses) >= 2 and losses[-1] > losses[0])) if losses else None
    return {"point": record["label"], **record["values"], "values": record["values"], "index": record["index"],
            "state": status.get("state", "not submitted"), "job_id": record["job_id"],
            "step": status.get("step"), "max_steps": status.get("max_steps"),
            "final_train_loss": losses[-1] if losses else None,
            "best_eval_loss": min((v for v in evals if _finite(v)), default=None),
            "final_eval_loss": evals[-1] if evals else None,
            "qa_f1": qa.get("qa_f1"), "qa_exact_match": qa.get("qa_exact_match"),
            "tokens_per_s": round(sum(speeds) / len(speeds), 1) if speeds else status.get("tokens_per_s"),
            "peak_memory_mb": status.get("peak_memory_mb"), "trainable_params": status.get("trainable_params"),
            "diverged": diverged, "message": status.get("message", ""),
            "adapter_dir": status.get("adapter_dir"), "model_id": status.get("model_id"),
            "load_in_4bit": status.get("load_in_4bit")}


def sweep_results(sweep_id: str, data_dir: str | Path) -> list[dict[str, Any]]:
    """One row per point, read from the job folders: its knob values (one column each and as `values`), state,
    final train loss, best and final eval loss, held-out QA F1 (once evaluate_sweep ran), mean tokens/s, peak
    memory (MB), trainable parameters and whether it diverged. Cheap enough to poll."""
    folder = _existing(data_dir, sweep_id)
    qa = json.loads((folder / "qa.json").read_text()) if (folder / "qa.json").is_file() else {}
    rows = []
    for record in _read_points(folder):
        job_id = record["job_id"]
        has_job = bool(job_id) and (job_dir(data_dir, job_id) / STATUS_FILE).exists()
        status = job_status(data_dir, job_id) if has_job else {}
        metrics = read_metrics(job_dir(data_dir, job_id)) if has_job else []
        rows.append(_row(record, status, metrics, qa.get(job_id or "", {})))
    return rows


def evaluate_sweep(sweep_id: str, data_dir: str | Path, runtime, progress: Progress | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Ask every finished adapter the sweep's eval_qa questions (method ft:<adapter>) and store the scores in
    qa.json; points scored before are not asked again. Returns job id -> {qa_f1, qa_exact_match, qa_n}."""
    from lab.knowledge.compare import CompareConfig, load_bundled_document  # RAG and FAISS imports: only when asked
    from lab.knowledge.evaluation import evaluate, load_qa
    sweep = load_sweep(sweep_id, data_dir)
    path = _existing(data_dir, sweep_id) / "qa.json"
    scores = json.loads(path.read_text()) if path.is_file() else {}
    if sweep.eval_qa is None:
        return scores
    items = load_qa(_resolve(sweep.eval_qa), sweep.eval_qa_limit)
    todo = [r for r in sweep_results(sweep_id, data_dir)
            if r["state"] == "completed" and r["adapter_dir"] and r["job_id"] not in scores]
    if not todo:
        return scores
    doc = load_bundled_document()  # ft: asks the question alone; evaluate() still wants a document
    for done, row in enumerate(todo):
        if progress:
            progress(done, len(todo), f"asking {len(items)} held-out questions to {row['point']}")
        method = f"ft:{row['adapter_dir']}"
        cfg = CompareConfig(model_id=row["model_id"], load_in_4bit=bool(row["load_in_4bit"]))
        summary = evaluate(runtime, doc, items, [method], cfg)["methods"][method]
        scores[row["job_id"]] = {"qa_f1": summary["f1"], "qa_exact_match": summary["exact_match"],
                                 "qa_n": summary["n"]}
        _write_json(path, scores)
    return scores


def overlay_curves(sweep_id: str, data_dir: str | Path) -> list[dict[str, Any]]:
    """Rows (point, step, loss, eval_loss) of every point's metrics.jsonl, for one plot with a line per point;
    a row carries loss, eval_loss or both (None where a step logged only the other)."""
    rows = []
    for record in _read_points(_existing(data_dir, sweep_id)):
        if record["job_id"] and (job_dir(data_dir, record["job_id"]) / STATUS_FILE).exists():
            for m in read_metrics(job_dir(data_dir, record["job_id"])):
                if m.get("loss") is not None or m.get("eval_loss") is not None:
                    rows.append({"point": record["label"], "step": m["step"], "loss": m.get("loss"),
                                 "eval_loss": m.get("eval_loss")})
    return rows


def export_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """The results table as CSV: point, the knob columns, then RESULT_FIELDS."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    knobs = list(dict.fromkeys(k for row in rows for k in row.get("values", {})))
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["point", *knobs, *RESULT_FIELDS[1:]], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


# ---- the decision -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    choice: str | None
    """The chosen point's label ('r=8, lora_alpha=16'), or None when no run can be compared yet."""
    explanation: str
    """What the rule is, what the numbers were and why this point wins, in sentences for the UI."""
    rule: str = ""
    metric: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    """The chosen point's knob values (empty without a choice)."""


def _metric_name(rows: list[dict[str, Any]], metric: str) -> str:
    if metric != "auto":
        return metric
    return "eval_loss" if any(r.get("final_eval_loss") is not None for r in rows) else "train_loss"


def decide(rows: list[dict[str, Any]], rule: str = "auto", knob: str | None = None, metric: str = "auto",
           tolerance: float = 0.01) -> Decision:
    """Apply a rule of RULES to result rows (sweep_results or hand-made ones with point, values, state and the
    metric columns). `knob` defaults to the first knob in the rows' values; rule 'auto' follows RULE_FOR_KNOB."""
    if not rows:
        return Decision(None, "The sweep has no points yet.", rule, metric)
    knob = knob or next(iter(rows[0]["values"]))
    rule = RULE_FOR_KNOB.get(knob, "lowest_eval_loss") if rule == "auto" else rule
    if rule not in RULES:
        raise ValueError(f"rule must be auto or one of {', '.join(RULES)}, got {rule!r}")
    metric = _metric_name(rows, metric)
    if metric not in METRICS:
        raise ValueError(f"metric must be auto or one of {', '.join(METRICS)}, got {metric!r}")
    column, words, higher = METRICS[metric]
    pct = f"{tolerance * 100:g}%"
    intro = f"Rule for {knob}: {RULES[rule]}"
    unfinished = [r["point"] for r in rows if r["state"] != "completed"]
    done = [r for r in rows if r["state"] == "completed" and _finite(r.get(column))]
    skipped = [r["point"] for r in rows if r["state"] == "completed" and not _finite(r.get(column))]
    notes = []
    if unfinished:
        notes.append(f"Not finished or failed, so not compared: {'; '.join(unfinished)}.")
    if skipped:
        notes.append(f"No {words} recorded for: {'; '.join(skipped)}.")
    if metric == "train_loss":
        notes.append("No held-out data, so the final train loss stands in; it also rewards memorising.")
    if rule == "largest_stable":
        diverged = [r["point"] for r in done if r.get("diverged")]
        done = [r for r in done if not r.get("diverged")]
        if diverged:
            notes.append(f"Diverged (loss NaN/infinite or ending above its start): {'; '.join(diverged)}.")
    if not done:
        return Decision(None, " ".join([intro, *notes, f"No finished run has a {words} to compare yet."]), rule, metric)
    best = max(done, key=lambda r: r[column]) if higher else min(done, key=lambda r: r[column])
    bound = best[column] - tolerance * abs(best[column]) if higher else best[column] + tolerance * abs(best[column])
    near = [r for r in done if (r[column] >= bound if higher else r[column] <= bound)]
    listed = ", ".join(f"{r['point']} ({r[column]:.4g})" for r in near)
    if rule == "lowest_eval_loss":
        chosen = best
        why = (f"Best {words}: {best[column]:.4g} ({best['point']}), so choose it." if len(near) == 1 else
               f"Best {words}: {best[column]:.4g} ({best['point']}); within {pct} of it: {listed}. Choose "
               f"{best['point']}, but these are a tie at this tolerance: prefer the cheapest of them.")
    else:
        # Ordered by the knob; between equal knob values (a grid of two knobs) the better metric wins.
        def worse(r: dict[str, Any]) -> float:
            return -r[column] if higher else r[column]
        chosen = (min(near, key=lambda r: (r["values"][knob], worse(r))) if rule == "smallest_best"
                  else max(near, key=lambda r: (r["values"][knob], -worse(r))))
        side = "at least" if higher else "at most"
        word = "smallest" if rule == "smallest_best" else "largest"
        why = (f"Best {words}: {best[column]:.4g} ({best['point']}). Within {pct} of it ({side} {bound:.4g}): "
               f"{listed}. The {word} {knob} among them is {_fmt(chosen['values'][knob])}, so choose "
               f"{chosen['point']}.")
        if rule == "smallest_best" and chosen is not best:
            why += f" The larger {knob} is no better beyond the tolerance, so it would only cost more."
    return Decision(chosen["point"], " ".join([intro, why, *notes]), rule, metric, dict(chosen["values"]))


def sweep_decision(sweep_id: str, data_dir: str | Path, rows: list[dict[str, Any]] | None = None) -> Decision:
    """decide() with the sweep's own rule, knob, metric and tolerance."""
    sweep = load_sweep(sweep_id, data_dir)
    rows = sweep_results(sweep_id, data_dir) if rows is None else rows
    return decide(rows, sweep.rule, sweep.knob, sweep.metric, sweep.tolerance)


@dataclass(frozen=True)
class SweepReport:
    sweep_id: str
    rows: list[dict[str, Any]]
    decision: Decision


def finish_sweep(sweep_id: str, data_dir: str | Path, runner: JobRunner, runtime=None,
                 progress: Progress | None = None, timeout_s: float = 24 * 3600) -> SweepReport:
    """Wait for every point's job, score the adapters on eval_qa when a runtime is given (points scored
    before are skipped), and return the table and the decision."""
    score = (lambda: evaluate_sweep(sweep_id, data_dir, runtime, progress)) if runtime is not None else None
    wait_sweep(sweep_id, data_dir, runner, timeout_s, progress, after_each=score)
    rows = sweep_results(sweep_id, data_dir)
    return SweepReport(sweep_id, rows, sweep_decision(sweep_id, data_dir, rows))


def run_sweep(sweep: SweepConfig, data_dir: str | Path, runner: JobRunner, runtime=None,
              progress: Progress | None = None, timeout_s: float = 24 * 3600) -> SweepReport:
    """start_sweep + finish_sweep: blocks until the table is complete. A UI calls start_sweep and polls
    sweep_results instead; after a restart, resume_sweep + finish_sweep carry on."""
    sweep_id = start_sweep(sweep, data_dir, runner)
    if progress:
        progress(0, 1, f"sweep {sweep_id}: {len(sweep.points())} points queued")
    return finish_sweep(sweep_id, data_dir, runner, runtime, progress, timeout_s)
