"""The names the lab accepts: users, files, jobs, sweeps, adapters, Hub ids, and the states a job moves through.

    python -c "from lab.core.names import adapter_name; print(adapter_name('my-adapter'))"

Each kind of name has one function here that returns the name when it is acceptable and raises a
`ValueError` saying what it accepts otherwise, always in the form "<what> <value> is not allowed:
<rule>". A name that becomes a file or folder name can never leave its folder: no '/', no '..',
never hidden (it starts with a letter or digit). Refusing who may act on someone else's job,
sweep, adapter or request is lab/core/access.py's `owner_refusal`.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

LOCAL_USER = "local"
"""The user every request belongs to when sign-in is off."""

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""A name that can become a file or folder name anywhere in the data directory: starts with a letter or digit,
then letters, digits, '.', '_' and '-', up to 100 characters, and never '..'."""

_SAFE_RULE = "use 1-100 letters, digits, '.', '_' and '-', starting with a letter or digit, with no '..'"

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
"""An adapter's name: also the name peft gives it inside a model, where '.' would be read as a module path."""

SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
"""A sweep's name: short, since it prefixes every point's job and adapter name."""

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
"""owner/name (or a bare name): what the Hugging Face Hub accepts as a repository id."""


def _refuse(what: str, value: Any, rule: str) -> ValueError:
    return ValueError(f"{what} {value!r} is not allowed: {rule}.")


def is_safe_name(value: Any) -> bool:
    return isinstance(value, str) and bool(SAFE_NAME.match(value)) and ".." not in value


def check_name(value: Any, what: str) -> str:
    """`value` when it is a safe name (SAFE_NAME), else a ValueError naming `what` ('File name', 'output_name')."""
    if not is_safe_name(value):
        raise _refuse(what, value, _SAFE_RULE)
    return value


def user_name(value: Any) -> str:
    """A sign-in name, which is also the name of the user's workspace folder."""
    return check_name(value, "User name")


def file_name(value: Any, what: str = "File name") -> str:
    """An upload's or an export's file name inside a user's workspace."""
    return check_name(value, what)


def job_id(value: Any) -> str:
    """A job folder's name under <data>/jobs, as `jobs list` shows it."""
    if not is_safe_name(value):
        raise _refuse("Job id", value, f"{_SAFE_RULE} (use the id `jobs list` shows)")
    return value


def sweep_id(value: Any) -> str:
    """A sweep folder's name under <data>/sweeps, as `sweep` printed it."""
    if not is_safe_name(value):
        raise _refuse("Sweep id", value, f"{_SAFE_RULE} (use the id `sweep` printed)")
    return value


def is_adapter_name(value: Any) -> bool:
    return isinstance(value, str) and bool(ADAPTER_NAME.match(value))


def adapter_name(value: Any) -> str:
    """A name under <data>/adapters that peft also accepts as the adapter's name inside a model."""
    if not is_adapter_name(value):
        raise _refuse("Adapter name", value, "use 1-64 letters, digits, '_' and '-', starting with a letter or digit")
    return value


def sweep_name(value: Any) -> str:
    """A sweep config's `name`."""
    if not isinstance(value, str) or not SWEEP_NAME.match(value):
        raise _refuse("name", value, "use 1-32 letters, digits, '_' and '-', starting with a letter or digit")
    return value


def is_hub_id(value: Any) -> bool:
    """Whether `value` has the form of a Hub repository id (owner/name or name); it may still be a local folder."""
    return isinstance(value, str) and bool(HUB_ID.match(value))


# ---- job states ---------------------------------------------------------------------------------------------------
class JobState(StrEnum):
    """queued -> running -> completed | failed | stopped, with stopping between running and stopped while
    the trainer saves a checkpoint. A str, so `status["state"] == "running"` and JSON work unchanged."""

    QUEUED = "queued"
    RUNNING = "running"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


ACTIVE_STATES = (JobState.RUNNING, JobState.STOPPING)
"""A process is training the job (or should be: a dead one is turned into failed when the job is read)."""
WAITING_OR_ACTIVE_STATES = (JobState.QUEUED, *ACTIVE_STATES)
"""Jobs that count against a user's LAB_MAX_QUEUED_JOBS: queued, or still holding a process."""
FINAL_STATES = (JobState.COMPLETED, JobState.FAILED, JobState.STOPPED)
"""Nothing runs any more; stopped and failed jobs can be resumed (queued again)."""
