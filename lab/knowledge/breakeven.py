"""After how many questions a one-off cost has paid for itself against full context.

CAG pays once to prefill the document into its cache and then less per question than full context,
which prefills the document again every time. A fine-tuned adapter pays once for its training and then
answers from the question alone. With one-off cost C and per-question seconds q for the method and f for
full context, the method is ahead from question n = ceil(C / (f - q)) on; when q >= f it never is.

The figures are those measured on the cards of one question (each answer's total seconds, the CAG
cache's build seconds, the adapter's training seconds), so the line changes with the machine, the
document and the load: it is an estimate to read beside the cards, not a constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BreakEven:
    method: str
    one_off_s: float
    """What the method paid once: the CAG cache's build, or the adapter's training."""
    per_question_s: float
    full_per_question_s: float
    questions: int | None
    """The first question count at which the method's total is below full context's; None: never."""

    def sentence(self) -> str:
        what = "its cache build" if self.method == "cag" else "its training"
        if self.questions is None:
            return (f"**{self.method}** never catches up with full context here: {self.per_question_s:.2f} s a "
                    f"question against {self.full_per_question_s:.2f} s, after {what} ({self.one_off_s:.1f} s).")
        return (f"**{self.method}** has paid for {what} ({self.one_off_s:.1f} s) after **{self.questions}** "
                f"question{'s' if self.questions != 1 else ''}: {self.per_question_s:.2f} s a question against "
                f"{self.full_per_question_s:.2f} s for full context.")


def break_even(method: str, one_off_s: float, per_question_s: float, full_per_question_s: float) -> BreakEven:
    """The break-even point of one method against full context (see the module docstring)."""
    for name, value in (("one-off", one_off_s), ("per-question", per_question_s), ("full context", full_per_question_s)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"The {name} seconds must be a finite number >= 0, got {value!r}.")
    saved = full_per_question_s - per_question_s
    # The small tolerance keeps float noise (250 / 0.01000000001) from adding a question.
    questions = None if saved <= 0 else max(1, math.ceil(one_off_s / saved - 1e-9))
    return BreakEven(method, one_off_s, per_question_s, full_per_question_s, questions)


def break_even_lines(metrics: dict[str, dict], training_s: dict[str, float]) -> list[BreakEven]:
    """Break-even of CAG and of every adapter whose training time is known, from one question's cards.

    `metrics`: method -> that method's card metrics (total_s, and for CAG cache_build_s); `training_s`:
    'ft:<adapter>' -> seconds its job trained. Needs the full-context card; methods without figures are skipped."""
    full = (metrics.get("full") or {}).get("total_s")
    if full is None:
        return []
    lines = []
    for method, m in metrics.items():
        per_question = m.get("total_s")
        one_off = m.get("cache_build_s") if method == "cag" else training_s.get(method)
        if per_question is not None and one_off is not None:
            lines.append(break_even(method, float(one_off), float(per_question), float(full)))
    return lines
