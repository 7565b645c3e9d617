"""A sweep's config: a base job config, a grid of knob values, ties and overrides, checked point by point.

    python -m lab sweep assets/sweeps/lora_rank.yaml --plan     # the points this file describes

A sweep is a base job config (a preset's name or a job mapping inline), `overrides` applied to
every point, a `grid` of knob -> values, and `tie` rules that derive a knob from another
(lora_alpha: "2*r" holds alpha/r at 2 while r moves). Every point's job config is validated when
the SweepConfig is made, so a bad value is refused before any job starts. The decision rules
(RULES) and metrics (METRICS) are defined here because the config's `decision` and `metric`
fields name them; lab.explain.sweeps.decide applies them.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lab.core.access import load_yaml_file
from lab.core.names import sweep_name
from lab.core.settings import REPO_ROOT
from lab.explain import catalog
from lab.training.configs import CONFIG_KINDS, config_from_dict
from lab.training.configs.base import TrainConfig

SPIKE = 1.25
"""A run spiked when its training loss rose above SPIKE x its first logged value (rule smallest_stable)."""

RULES: dict[str, str] = {
    "smallest_best": "Keep the smallest value that reaches the best validation metric. A run reaches it when "
                     "it is within the tolerance of the best run; a larger value that is only as good costs "
                     "parameters, memory and time for nothing. (The rank guide's rule: pick the smallest rank "
                     "that wins on validation.)",
    "largest_stable": "Keep the best stable run. A run diverges when its training loss becomes NaN or infinite or "
                      "ends above where it started; among the stable runs within the tolerance of the best "
                      "metric, the largest value wins. That tie-break is the lab's own choice (no guide prescribes "
                      "it): within noise, the larger rate has learned as much in fewer effective steps.",
    "smallest_stable": "Keep the smallest value whose run is stable, as the knob's entry advises (warmup: the "
                       "smallest that gives a smooth start; accumulation: the smallest that gives a stable "
                       "curve). A run is unstable when its training loss becomes NaN or infinite, ends above "
                       "where it started, or spikes more than "
                       f"{SPIKE - 1:.0%} above its first value.",
    "lowest_eval_loss": "Keep the run with the best validation metric; runs within the tolerance of it are "
                        "named as ties, since a difference that small is noise on a short run.",
}
"""Decision rules by name, each in words the UI shows beside the table."""

RULE_FOR_KNOB = {"r": "smallest_best", "gradient_accumulation_steps": "smallest_stable",
                 "learning_rate": "largest_stable", "warmup_ratio": "smallest_stable",
                 "warmup_steps": "smallest_stable"}
"""What decision 'auto' applies to the sweep's first grid knob; any other knob gets lowest_eval_loss."""

METRICS: dict[str, tuple[str, str, bool]] = {
    "eval_loss": ("final_eval_loss", "final eval loss", False),
    "best_eval_loss": ("best_eval_loss", "best eval loss", False),
    "qa_f1": ("qa_f1", "held-out QA token F1", True),
    "train_loss": ("final_train_loss", "final train loss", False),
}
"""metric name -> (row column, words, higher is better)."""

SUGGESTED_GRIDS: dict[str, dict[str, Any]] = {
    "r": {"grid": {"r": [8, 16, 32]}, "tie": {"lora_alpha": "2*r"}},
    "lora_alpha": {"grid": {"lora_alpha": [8, 16, 32, 64]}},
    "lora_dropout": {"grid": {"lora_dropout": [0.0, 0.05, 0.1]}},
    "learning_rate": {"grid": {"learning_rate": [1e-4, 2e-4, 4e-4, 8e-4]}},
    "lr_scheduler_type": {"grid": {"lr_scheduler_type": ["linear", "cosine", "constant_with_warmup"]}},
    # A packed step holds several examples: every point gets the same examples (so the same tokens).
    "packing": {"grid": {"packing": [False, True]}, "budget": "examples"},
    # A step of accumulation 4 holds 4x the examples of accumulation 1: equal examples, not equal steps.
    "gradient_accumulation_steps": {"grid": {"gradient_accumulation_steps": [1, 2, 4]}, "budget": "examples",
                                    "overrides": {"max_steps": 40}},
    "weight_decay": {"grid": {"weight_decay": [0.0, 0.01, 0.1]}},
    # Refused on a model without biases (lab.explain.sweeps.plan.check_effective): the points would be identical.
    "bias": {"grid": {"bias": ["none", "lora_only", "all"]}},
    # At matched gain, as the entry advises; the no-op check then refuses it, because peft multiplies the adapter
    # by that one number, so both points are the same computation (the refusal says so).
    "use_rslora": {"grid": {"use_rslora": [False, True]}, "tie": {"lora_alpha": "gain 2"}},
    "warmup_ratio": {"grid": {"warmup_ratio": [0.0, 0.05, 0.1]}, "overrides": {"warmup_steps": 0}},
}
"""A first grid per sweepable catalog entry (the Explain tab's "sweep this" button), derived from each
entry's how_to_tune, with its controlled variables: `budget` (equal examples where a point's step holds a
different amount of data), ties (alpha moving with r, or matched gain), and the rule of RULE_FOR_KNOB."""
BUDGETS = {"steps": "every point runs the same max_steps",
           "examples": "every point trains on the same number of examples (so the same tokens): max_steps is "
                       "scaled by the examples one step holds, and each point is evaluated and saved once, at its "
                       "end, after the same data"}

PRESETS_DIR = REPO_ROOT / "assets" / "presets"
DEFAULT_BASE = "sft_lora_qa"
QUICK_OVERRIDES = {"max_steps": 20, "eval_steps": 10, "save_steps": 20}
"""A suggested sweep runs the bundled QA preset for 20 steps per point instead of its 55."""

_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_TIE = re.compile(rf"^\s*(?:(?P<factor>{_NUMBER})\s*\*\s*)?(?P<root>sqrt\(\s*)?(?P<knob>[A-Za-z_][A-Za-z0-9_]*)"
                  rf"(?(root)\s*\))\s*$"  # 2*r, r, 2*sqrt(r)
                  rf"|^\s*(?P<literal>{_NUMBER})\s*$"  # 16
                  rf"|^\s*gain\s+(?P<gain>{_NUMBER})\s*$")  # gain 2: lora_alpha for peft's scale 2
_NOT_SWEPT = {"kind": "it picks the trainer; sweep one kind at a time",
              "output_name": "the sweep names each point's adapter itself"}


def _resolve(path: str | Path) -> Path:
    """A path as the lab's configs use them: absolute, or relative to the lab's folder (where assets/ is)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def preset_names() -> list[str]:
    """The shipped job presets a sweep's base may name (the stems of assets/presets/*.yaml)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def grid_size(grid: Any) -> int:
    """How many points a grid makes (the product of its lists' lengths), counted without building any."""
    if not isinstance(grid, dict):
        return 0
    return math.prod(len(values) if isinstance(values, list) else 1 for values in grid.values())


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


@dataclass(frozen=True)
class Tie:
    """A knob derived at each point: factor x the value of `knob` (or of its square root), a constant when knob
    is None, or with `gain` the lora_alpha that gives peft's scale `factor` (factor x r, or factor x sqrt(r)
    with use_rslora): the matched gain the rsLoRA entry advises comparing at."""
    factor: int | float
    knob: str | None
    root: bool = False
    gain: bool = False

    @classmethod
    def parse(cls, target: str, expr: Any) -> Tie:
        """'2*r', '0.5 * r', 'r', '2*sqrt(r)', 'gain 2' (lora_alpha only) or a number. Anything else is refused;
        nothing is ever evaluated."""
        if _is_number(expr):
            return cls(expr, None)
        match = _TIE.match(expr) if isinstance(expr, str) else None
        if match is None:
            raise ValueError(f"tie.{target}: {expr!r} is not '<number>*<knob>' (e.g. '2*r'), '<number>*sqrt(<knob>)',"
                             f" 'gain <number>', '<knob>' or a number")
        if match["gain"] is not None and target != "lora_alpha":
            raise ValueError(f"tie.{target}: 'gain' sets lora_alpha from r and use_rslora; tie lora_alpha with it")
        text = match["factor"] or match["literal"] or match["gain"] or "1"
        factor = int(text) if text.isdigit() else float(text)
        if match["gain"] is not None:
            return cls(factor, None, gain=True)
        return cls(factor, match["knob"], root=bool(match["root"]))

    def value(self, point: dict[str, Any]) -> int | float:
        if self.gain:
            r = point.get("r")
            if not _is_number(r):
                raise ValueError(f"tie 'gain' needs a number in r, got {r!r}")
            return self.factor * (math.sqrt(r) if point.get("use_rslora") else r)
        if self.knob is None:
            return self.factor
        source = point.get(self.knob)
        if not _is_number(source):
            raise ValueError(f"tie needs a number in {self.knob}, got {source!r}")
        return self.factor * (math.sqrt(source) if self.root else source)


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
    """The job config every point starts from: the name of a shipped preset (a file stem in assets/presets/, e.g.
    sft_lora_qa) or a job config mapping inline. Never a path: a sweep cannot read a file you name."""
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
    budget: str = "steps"
    """What every point gets the same of: 'steps' (the base's max_steps) or 'examples' (max_steps scaled so each
    point trains on as many examples as the base with its overrides; with packing, a packed row counts as
    examples_per_packed_row examples). Use 'examples' when the knob changes how much data one step holds
    (batch size, accumulation, packing), or the point that sees more data wins for that reason alone."""
    examples_per_packed_row: float | None = None
    """How many examples one packed row holds on this data (TRL's best-fit decreasing packing at max_length),
    measured by lab.explain.sweeps.plan.measure_packing; needed by budget 'examples' when a point packs."""

    def __post_init__(self) -> None:
        sweep_name(self.name)
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
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if self.examples_per_packed_row is not None and not (_finite(self.examples_per_packed_row)
                                                             and self.examples_per_packed_row >= 1):
            raise ValueError(f"examples_per_packed_row must be a number >= 1, got {self.examples_per_packed_row!r}")
        self._examples = self._budget_examples() if self.budget == "examples" else None
        if self.rule in ("smallest_best", "largest_stable", "smallest_stable") and not all(map(_is_number, self.grid[self.knob])):
            raise ValueError(f"decision {self.rule} orders the values of {self.knob}, so they must be numbers; "
                             f"got {self.grid[self.knob]!r}")
        # The base, then every value alone (so an error names the one knob and value at fault), then every point.
        self._build({}, "the base with its overrides")
        for knob, values in self.grid.items():
            for value in values:
                self._build({knob: value}, f"grid value {knob}={value!r}")
        _refuse_identical(self.points())

    def _step_examples(self, data: dict[str, Any]) -> float:
        """Examples one optimizer step trains on (per process) with these settings."""
        merged = self._defaults | data
        per_row = 1.0
        if merged.get("packing"):
            if self.examples_per_packed_row is None:
                raise ValueError("budget 'examples' with packing needs examples_per_packed_row (measured on the "
                                 "data by lab.explain.sweeps.plan.measure_packing; suggest_sweep fills it in)")
            per_row = self.examples_per_packed_row
        return merged["per_device_train_batch_size"] * merged["gradient_accumulation_steps"] * per_row

    def _budget_examples(self) -> float:
        data = self._base | self.overrides
        steps = (self._defaults | data)["max_steps"]
        if not isinstance(steps, int) or steps < 1:
            raise ValueError("budget 'examples' needs max_steps in the base or the overrides (the budget is max_steps"
                             " x the examples one step of the base holds)")
        return steps * self._step_examples(data)

    def _load_base(self) -> dict[str, Any]:
        if isinstance(self.base, dict):
            return copy.deepcopy(self.base)
        presets = preset_names()
        if not isinstance(self.base, str) or self.base not in presets:
            raise ValueError(f"base must name a preset ({', '.join(presets)}) or be a job config mapping inline; "
                             f"got {self.base!r:.80}")
        data = load_yaml_file(PRESETS_DIR / f"{self.base}.yaml")
        if not isinstance(data, dict):
            raise ValueError(f"base: preset {self.base} does not hold a mapping of field: value")
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
            cadence: dict[str, Any] = {}
            if self._examples is not None:
                # Equal examples: this point's steps, and one evaluation and save at its end, after the same data.
                steps = max(1, round(self._examples / self._step_examples(data | tied)))
                tied["max_steps"] = steps
                cadence = {"eval_steps": steps, "save_steps": steps}
                warmup = (self._defaults | data)["warmup_steps"]
                if warmup:  # a step count covers a different amount of data at each point: keep the share
                    base_steps = (self._defaults | self._base | self.overrides)["max_steps"]
                    cadence["warmup_steps"] = max(1, round(warmup * steps / base_steps))
            return values | tied, config_from_dict(data | tied | cadence, "sweep")
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
        """The base as a mapping (read from the preset when base names one), before overrides."""
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


def effective_settings(cfg: TrainConfig) -> dict[str, Any]:
    """What a job computes with, for telling points apart: its config, except that lora_alpha and use_rslora
    become the one number peft multiplies the adapter by (alpha/r or alpha/sqrt(r)), warmup becomes steps, and
    names that do not change training (output_name) are left out."""
    data = asdict(cfg)
    data.pop("output_name", None)
    if "use_rslora" in data:
        alpha, rs = data.pop("lora_alpha"), data.pop("use_rslora")
        if getattr(cfg, "uses_lora", False):
            data["lora_scale"] = round(alpha / (math.sqrt(cfg.r) if rs else cfg.r), 9)
    ratio = data.pop("warmup_ratio")
    if ratio and cfg.max_steps > 0:  # transformers: ceil(total x share) for a share below 1
        data["warmup_steps"] = math.ceil(cfg.max_steps * ratio)
    elif ratio:
        data["warmup_share"] = ratio
    return data


def _refuse_identical(points: list[SweepPoint]) -> None:
    """A grid whose points compute the same thing would crown a winner among identical runs: refuse it."""
    seen: dict[str, SweepPoint] = {}
    for point in points:
        settings = effective_settings(point.config)
        key = repr(sorted(settings.items()))
        if key in seen:
            first = seen[key]
            a, b = asdict(first.config), asdict(point.config)
            differ = sorted(k for k in a if a[k] != b[k] and k != "output_name")
            why = []
            if {"lora_alpha", "use_rslora"} & set(differ) and "lora_scale" in settings:
                why.append(f"lora_alpha and use_rslora only set the one number peft multiplies the adapter by "
                           f"(alpha/r, or alpha/sqrt(r) with rsLoRA), and both points give {settings['lora_scale']:g}")
            if {"warmup_ratio", "warmup_steps"} & set(differ):
                why.append(f"both warmups come to {settings.get('warmup_steps')} steps")
            raise ValueError(f"points {first.label!r} and {point.label!r} train the same model: they differ only in "
                             f"{', '.join(differ)}, and {'; '.join(why) or 'that changes nothing the job computes'}. "
                             "Comparing them would only measure noise, so this sweep is refused.")
        seen[key] = point


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
    return sweep_from_dict(load_yaml_file(path), str(path))


def suggest_sweep(knob: str, base: str | dict[str, Any] = DEFAULT_BASE,
                  overrides: dict[str, Any] | None = None, examples_per_packed_row: float | None = None
                  ) -> SweepConfig:
    """A ready first sweep over a catalog knob (SUGGESTED_GRIDS) on `base`, shortened by QUICK_OVERRIDES. A grid
    with packing and budget 'examples' needs examples_per_packed_row (lab.explain.sweeps.plan.suggest measures
    it on the data). A grid whose points would be identical raises ValueError saying why."""
    if knob not in SUGGESTED_GRIDS:
        raise KeyError(f"no suggested sweep for {knob!r}; sweepable: {', '.join(SUGGESTED_GRIDS)}")
    spec = SUGGESTED_GRIDS[knob]
    return SweepConfig(name=knob.replace(".", "_")[:32], base=base, grid=copy.deepcopy(spec["grid"]),
                       tie=dict(spec.get("tie", {})),
                       overrides=QUICK_OVERRIDES | spec.get("overrides", {}) | (overrides or {}),
                       budget=spec.get("budget", "steps"), examples_per_packed_row=examples_per_packed_row)
