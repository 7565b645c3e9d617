"""The lab's checks on what users type: one rule for safe names and one for field values.

    python -c "from lab.core.checks import check_name; print(check_name('my-adapter', 'output_name'))"

Every config's `__post_init__`, the job and sweep ids and the upload names use these, so a bad
value always raises a `ValueError` that names the field the user sees and what it accepts.
"""

from __future__ import annotations

import re
from typing import Any

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""A name that can become a file or folder name anywhere in the data directory: starts with a letter or digit,
then letters, digits, '.', '_' and '-', up to 100 characters, and never '..'."""


def check(condition: bool, name: str, message: str, value: Any) -> None:
    """Raise `ValueError("<name> <message>, got <value>")` unless `condition` holds."""
    if not condition:
        raise ValueError(f"{name} {message}, got {value!r}")


def is_safe_name(value: Any) -> bool:
    return isinstance(value, str) and bool(SAFE_NAME.match(value)) and ".." not in value


def check_name(value: Any, name: str) -> str:
    """`value` when it is a safe name (see SAFE_NAME), else a ValueError naming the field."""
    check(is_safe_name(value), name, "may use letters, digits, '.', '_' and '-' only (up to 100, starting with a "
          "letter or digit)", value)
    return value
