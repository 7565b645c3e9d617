"""The engine: the one facade the tabs, the CLI and the tests call.

    python -m lab info

An Engine is the process's Runtime (settings, device, session manager) plus every operation a
user can ask for, one module per area: uploads, knowledge (documents, compare, evaluation),
Arena, training (configs, jobs, adapters, datasets), placement (when queued jobs start, who holds
what on each device) and Explain (catalog, calculators, sweeps).
Every decision about who may touch which file, job, model or quota is made in this package,
once: a method that acts for a user takes that user's name. Pure functions are offered as they
are (staticmethod); the packages under lab/ take a Runtime and never import this one, so there
is no cycle.
"""

from __future__ import annotations

import platform
import threading
import time
from pathlib import Path
from typing import Any

import torch

from lab.core import access
from lab.core.device import memory_info
from lab.core.users import LOCAL_USER
from lab.engine.arena import ArenaOps
from lab.engine.explain import ExplainOps
from lab.engine.history import HistoryOps
from lab.engine.knowledge import KnowledgeOps
from lab.engine.placement import PlacementOps
from lab.engine.training import config_paths
from lab.inference.models import materialise_embedded
from lab.knowledge import disk

__all__ = ["Engine", "config_paths"]


class Engine(HistoryOps, KnowledgeOps, ArenaOps, ExplainOps, PlacementOps):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages_lock = threading.Lock()
        self._page_callers: dict[str, dict[str, float]] = {}
        """Browser session -> {caller id: when made}: what `cancel_page` cancels when the page goes."""
        disk.set_cap(self.settings.data_dir / "knowledge", int(self.settings.knowledge_cache_gb * 2**30))

    def info(self) -> dict:
        """Everything the System tab and `python -m lab info` show."""
        mem = memory_info(self.device.device)
        info = {"python": platform.python_version(), "torch": torch.__version__,
                "device": self.device.device, "dtype": str(self.device.dtype).removeprefix("torch."),
                "attn_implementation": self.device.attn_implementation,
                "gpu_name": torch.cuda.get_device_name(0) if self.device.device == "cuda" else None,
                "memory_mb": {k: round(v / 2**20) for k, v in mem.items()},
                "data_dir": str(self.settings.data_dir), "default_model": self.settings.model_id,
                "load_in_4bit": self.settings.load_in_4bit, "sign_in": bool(self.settings.auth)}
        return info | {"session": self.stats()}

    def new_caller(self, kind: str, user: str | None = None, session: str | None = None) -> str:
        """An id for one group of requests (a Compare question, an Arena round, a Playground answer) by `user`:
        its place in the queue is readable with queue_position, and a remote vLLM server keys its prefix cache
        by the user in it (each user's questions share a cached document, nobody else's). Without sign-in every
        visitor is the local user: `session` (gradio's session hash) then names the visitor, so each browser session
        gets its own fair share."""
        if session and not self.settings.sign_in_on():
            user = f"visitor-{session[:12]}"
        caller = self.sessions.new_caller(kind, user)
        if session:
            with self._pages_lock:
                live, now = {t["caller"] for t in self.sessions.board.rows()}, time.monotonic()
                # Forget callers with nothing in flight a minute after they were made (their requests ended, or
                # never came), so the table holds only pages with work.
                self._page_callers = {s: kept for s, callers in self._page_callers.items()
                                      if (kept := {c: t for c, t in callers.items() if c in live or now - t < 60})}
                self._page_callers.setdefault(session, {})[caller] = now
        return caller

    def cancel_page(self, session: str) -> int:
        """Cancel every model request a browser page (gradio's session hash) still has in flight: the page was
        closed or reloaded. How many were cancelled."""
        with self._pages_lock:
            callers = self._page_callers.pop(session, {})
        return sum(self.sessions.board.cancel_caller(c, "This request was cancelled: its page was closed.")
                   for c in callers)

    def queue_position(self, caller: str) -> int | None:
        """1-based place of `caller` in the queue for exclusive model work (0 while it holds the model), else in its
        model's batch gate; None when it is not waiting."""
        return self.sessions.position(caller)

    def running_requests(self) -> list[dict]:
        """Every model request in flight (id, user, kind, model, what, state, age_s): the System tab's list."""
        return self.sessions.board.rows()

    def cancel_request(self, request_id: int, user: str = LOCAL_USER) -> bool:
        """Cancel one model request: its owner or an admin may (PermissionError otherwise); it stops at its next
        token or while waiting, freeing its place. False when it had already ended."""
        ticket = self.sessions.board.get(int(request_id))
        if ticket is None:
            return False
        refusal = access.cancel_refusal(self.settings, user, ticket.user)
        if refusal:
            raise PermissionError(refusal)
        who = "its owner" if user == ticket.user else f"{user} (admin)" if access.is_admin(self.settings, user) else user
        return self.sessions.board.cancel(ticket.id, f"This request was cancelled by {who}.")

    def cancel_caller(self, caller: str) -> int:
        """Cancel every request of one caller id (a page that went away); how many were still in flight."""
        return self.sessions.board.cancel_caller(caller, "This request was cancelled: its page was closed.")

    def memory_info(self) -> dict[str, float]:
        """Total and free bytes of the device models run on."""
        return memory_info(self.device.device)

    def prepare_embedded(self) -> Path:
        """Convert the embedded model into <data>/models once, so later loads are fast (`python -m lab prepare`)."""
        return materialise_embedded(self.settings.subdir("models"))

    def close(self) -> None:
        """Stop the job runner's polling thread if this engine started one; jobs it launched keep running."""
        if self._jobs is not None:
            self._jobs.close()
