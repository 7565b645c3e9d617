"""The arbiter between serving and training: a job starting on the GPU the app serves models from gets it cleared.

    python -m lab jobs list      # a job's message says what was unloaded for it

The session manager (lab/inference/session.py) holds models, batching engines and KV caches on one device, the
current CUDA device (cuda:0 as the app runs) or the CPU. Memory it has freed stays in this process's CUDA cache,
out of reach of a job's separate process, so before the job runner starts a job on that GPU it unloads every
inference entry nothing uses right now and empties the cache; a later request loads what it needs again. Entries
in use (pinned) stay, and their bytes stay counted against the job (lab/training/jobs/inventory.py).
On CPU slots a job's RAM is set aside in the session manager's budget instead (reserve_making_room), and idle
entries are unloaded only when that reservation does not fit beside them. Both paths unload through one rule,
`_unload_idle`: what nothing uses right now goes, what is in use stays.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

from lab.core.errors import MemoryBudgetError

if TYPE_CHECKING:  # only an annotation: placing jobs need not load the inference stack
    from lab.inference.session import SessionManager


def serving_gpu(sessions: SessionManager | None) -> str | None:
    """The GPU the session manager loads onto ('cuda' is the current device, which the app leaves at cuda:0), or
    None when it serves from the CPU or there is none."""
    return "cuda:0" if sessions is not None and sessions.device.device == "cuda" else None


def takes_budget(sessions: SessionManager | None, devices: list[str]) -> bool:
    """Whether a job on `devices` takes memory from the session manager's budget: on CPU slots (RAM is shared) and
    on the GPU it serves from; other GPUs are not in its budget."""
    gpu = bool(devices) and devices[0].startswith("cuda:")
    return sessions is not None and (not gpu or serving_gpu(sessions) in devices)


def reclaimable(sessions: SessionManager | None) -> dict[str, tuple[list[str], int]]:
    """device -> (labels, bytes) of the idle inference entries `make_room` would unload there, for
    inventory.with_holdings (which counts those bytes as free)."""
    gpu = serving_gpu(sessions)
    if gpu is None:
        return {}
    idle = sessions.idle_entries()
    return {gpu: ([label for _, label, _ in idle], sum(nbytes for *_, nbytes in idle))}


def make_room(sessions: SessionManager | None, devices: list[str]) -> str:
    """Unload the idle inference entries on the serving GPU if the job is placed there; returns what went, as a
    clause for the job's message ('' when nothing did)."""
    gpu = serving_gpu(sessions)
    if gpu is None or gpu not in devices:
        return ""
    labels = _unload_idle(sessions)
    import torch  # here, not at the top: the job runner (and `jobs list`) imports this module

    if labels and torch.cuda.is_available():
        gc.collect()  # the freed tensors go back to the CUDA cache first, then the cache goes back to the device
        torch.cuda.empty_cache()
    return f"; unloaded idle {', '.join(labels)} from {gpu} for it (loaded again on the next request)" if labels else ""


def _unload_idle(sessions: SessionManager) -> list[str]:
    """Unload every inference entry nothing uses right now; the labels of what went."""
    idle = sessions.idle_entries()
    for key, _, _ in idle:
        sessions.remove(key)  # a parent's removal takes its children along; removing them again does nothing
    return [label for _, label, _ in idle]


def free_idle(sessions: SessionManager) -> str:
    """Unload every idle inference entry (a job's reservation did not fit beside them: on a CPU the job and the
    models share the RAM budget, and without this a queued job would wait for memory that only idle models hold).
    Returns what went, as a clause for the job's message ('' when nothing did)."""
    labels = _unload_idle(sessions)
    return f"; unloaded idle {', '.join(labels)} for it (loaded again on the next request)" if labels else ""


def reserve_making_room(sessions: SessionManager, job_id: str, nbytes: int) -> str:
    """Reserve a job's memory; when it does not fit beside the loaded models, unload the idle ones and try once more
    (MemoryBudgetError if it still does not fit). Returns what was unloaded, as a clause for the job's message."""
    try:
        sessions.reserve(job_id, nbytes)
        return ""
    except MemoryBudgetError:
        if nbytes > sessions.budget_bytes:
            raise
    made = free_idle(sessions)
    sessions.reserve(job_id, nbytes)
    return made
