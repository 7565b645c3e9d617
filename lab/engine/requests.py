"""Model requests in flight: who made them, where each waits, and who may cancel which.

    python -c "from lab.engine import Engine; print(Engine().requests.running_requests())"

A caller id names one group of requests (a Compare question, an Arena round, a Playground answer); the
session manager's RequestBoard holds one ticket per request. This service adds the browser page each caller
came from, so a page that closes cancels what it still has in flight.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from lab.core import access
from lab.core.users import LOCAL_USER
from lab.inference.runtime import Runtime

if TYPE_CHECKING:
    from lab.inference.session import SessionManager

PAGE_CLOSED = "This request was cancelled: its page was closed."


class Requests:
    """The tickets of every model request, read and cancelled on a user's behalf."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime, self.settings = runtime, runtime.settings
        self._pages_lock = threading.Lock()
        self._page_callers: dict[str, dict[str, float]] = {}
        """Browser session -> {caller id: when made}: what `cancel_page` cancels when the page goes."""

    @property
    def sessions(self) -> SessionManager:
        """The Runtime's session manager, built on first use (not when the Engine is)."""
        return self.runtime.sessions

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
        return sum(self.sessions.board.cancel_caller(c, PAGE_CLOSED) for c in callers)

    def queue_position(self, caller: str) -> int | None:
        """1-based place of `caller` in the queue for exclusive model work (0 while it holds the model), else in its
        model's batch gate; None when it is not waiting."""
        return self.sessions.position(caller)

    def memory_wait(self, caller: str) -> str | None:
        """What `caller`'s request waits for while a training job's reservation holds the memory its model needs
        (it waits up to the session manager's memory_wait_s, then fails naming the job); None when it does not."""
        return self.sessions.memory_wait(caller)

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
        admin = access.is_admin(self.settings, user)
        who = "its owner" if user == ticket.user else f"{user} (admin)" if admin else user
        return self.sessions.board.cancel(ticket.id, f"This request was cancelled by {who}.")

    def cancel_caller(self, caller: str) -> int:
        """Cancel every request of one caller id (a page that went away); how many were still in flight."""
        return self.sessions.board.cancel_caller(caller, PAGE_CLOSED)
