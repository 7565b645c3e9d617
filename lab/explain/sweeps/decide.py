"""The decision: a rule of RULES applied to a sweep's result rows, with the sentences that say why.

    python -m lab sweep assets/sweeps/lora_rank.yaml     # runs the sweep; its decision is printed at the end

decide() reads only the rows (sweep_results' or hand-made ones), so a rule can be tried on any
table; lab.explain.sweeps.run.sweep_decision applies it with a sweep's own rule, knob, metric and
tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab.explain.sweeps.config import METRICS, RULE_FOR_KNOB, RULES, SPIKE, _finite, _fmt


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
    if rule in ("largest_stable", "smallest_stable"):
        diverged = [r["point"] for r in done if r.get("diverged")]
        done = [r for r in done if not r.get("diverged")]
        if diverged:
            notes.append(f"Diverged (loss NaN/infinite or ending above its start): {'; '.join(diverged)}.")
    if rule == "smallest_stable":
        spiked = [r["point"] for r in done if r.get("spiked")]
        done = [r for r in done if not r.get("spiked")]
        if spiked:
            notes.append(f"Unstable start (training loss rose over {SPIKE - 1:.0%} above its first value): "
                         f"{'; '.join(spiked)}.")
    if not done:
        return Decision(None, " ".join([intro, *notes, f"No finished run has a {words} to compare yet."]), rule, metric)
    best = max(done, key=lambda r: r[column]) if higher else min(done, key=lambda r: r[column])
    bound = best[column] - tolerance * abs(best[column]) if higher else best[column] + tolerance * abs(best[column])
    near = [r for r in done if (r[column] >= bound if higher else r[column] <= bound)]
    listed = ", ".join(f"{r['point']} ({r[column]:.4g})" for r in near)
    if rule == "smallest_stable":
        def key(r: dict[str, Any]) -> tuple:
            return (r["values"][knob], -r[column] if higher else r[column])
        chosen = min(done, key=key)
        stable = ", ".join(f"{r['point']} ({r[column]:.4g})" for r in sorted(done, key=key))
        why = (f"Stable runs, with their {words}: {stable}. The smallest {knob} among them is "
               f"{_fmt(chosen['values'][knob])}, so choose {chosen['point']}.")
        if abs(chosen[column] - best[column]) > tolerance * abs(best[column]):
            why += (f" {best['point']} reached a better {words} ({best[column]:.4g}), beyond the {pct} tolerance; "
                    "the rule asks only for a stable run, so weigh that difference yourself.")
        return Decision(chosen["point"], " ".join([intro, why, *notes]), rule, metric, dict(chosen["values"]))
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
