"""The lab's checks on the values users type into config fields (names and ids: lab/core/names.py).

    python -c "from lab.core.checks import check_whole; check_whole(0, 'max_steps', 1)"

Every config's `__post_init__` uses these, so a bad value always raises a `ValueError` that names
the field the user sees and what it accepts.
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any

MAX_TOKENS = 131_072
"""The most tokens any field may ask for (max_length, max_new_tokens, ...): 128 Ki, the context of the largest
open models. A bigger number is a typo that would otherwise fail late, deep inside a trainer or a cache."""

MAX_MODEL_ID_CHARS = 1024
"""The longest model id or model folder path accepted (Hub ids are under 100 characters): longer ones are refused
with the usual bad-id message instead of the operating system's 'File name too long'."""

MAX_QUESTION_CHARS = 4_000
"""The longest question or prompt a person types (Compare, each evaluation question, the Arena), in characters.
Checked before any model loads: a 10 MB question would otherwise be tokenized (tens of seconds) only to be refused
for the context window. Knowledge belongs in the document, not the question."""


def check_question_length(text: str, what: str = "The question") -> None:
    """Refuse text over MAX_QUESTION_CHARS with a message saying how long it is and what the limit is."""
    if len(text) > MAX_QUESTION_CHARS:
        raise ValueError(f"{what} has {len(text):,} characters; the limit is {MAX_QUESTION_CHARS:,}. Ask something "
                         "shorter: the knowledge belongs in the document, not the question.")


def check(condition: bool, name: str, message: str, value: Any) -> None:
    """Raise `ValueError("<name> <message>, got <value>")` unless `condition` holds."""
    if not condition:
        raise ValueError(f"{name} {message}, got {value!r}")


def check_finite(value: Any, name: str) -> None:
    """Refuse NaN and infinities. YAML reads `.nan` and `.inf` as floats; `inf` passes checks like `> 0` and
    `nan` fails every comparison silently, so neither may reach the range checks."""
    check(not isinstance(value, float) or math.isfinite(value), name, "must be a finite number", value)


def check_finite_fields(value: Any, name: str = "") -> None:
    """`check_finite` on every float inside a config: dataclass fields (`name.field`), list items (`name[i]`) and
    mapping values (`name.key`), so the message says exactly where the NaN or infinity is."""
    if is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            check_finite_fields(getattr(value, f.name), f"{name}.{f.name}" if name else f.name)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_finite_fields(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_finite_fields(item, f"{name}[{index}]")
    else:
        check_finite(value, name)


def check_whole(value: Any, name: str, low: int, high: int | None = None) -> None:
    """A whole number (not a bool) >= low and, when given, <= high, e.g. a batch size from 1 to 4096."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    check(ok, name, f"must be a whole number from {low:,} to {high:,}" if high is not None
          else f"must be a whole number >= {low:,}", value)
