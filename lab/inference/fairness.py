"""Sharing the models fairly between users: who goes next, how much each may ask at once, and cancelling.

    .venv/bin/python -m pytest -q tests/inference/test_fairness.py

Every model request is a `Ticket` on the `RequestBoard` from the moment it is asked until its answer ends or is
cancelled. The board refuses a user's request beyond `per_user` in flight (LAB_MAX_REQUESTS_PER_USER), lists every
request for the System tab, and cancels one by id (an admin) or all of one page's requests.

Two waiting rooms decide who goes next, both round-robin over users, never first-come-first-served (with a
first-come queue, one user who sends 30 requests puts everybody else behind all 30):
- `FairGate`, one per model, admits requests into its batching engine. At most `slots` run at once, and at most
  `per_user` of one user's (LAB_MAX_BATCH_PER_USER): the rest of a backlog waits even when the batch has room,
  because on a small device every extra row slows every other row's steps, and requests already decoding cannot
  be taken back out when a newcomer arrives. When a place frees, the waiting user with the fewest requests running
  goes next. A user running fewer than a fair share (slots / users with requests) goes in at once even when the
  batch is full, so a newcomer's single question never waits for another user's backlog: it only shares the
  forward passes with at most `per_user` of each other user's.
- `GpuQueue`, one per process, hands out the exclusive slot (loading a model, adapters, the explicit CAG cache):
  the waiting user served longest ago goes next.

A caller id is '<user>:<kind>-<n>' (SessionManager.new_caller); anonymous visitors of a Space are told apart by
their browser session ('visitor-<session>'), so each counts as a user here.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from lab.core.access import QuotaError
from lab.core.errors import RequestCancelled

ANONYMOUS = "local"
"""The user of a caller id that names none (the command line, tests)."""

WAKE_S = 0.5
"""Waiters look at their ticket's cancel flag at least this often."""


def caller_user(caller: str) -> str:
    """The user a caller id belongs to: 'alice:arena-3' -> 'alice'."""
    user, sep, _ = caller.partition(":")
    return user if sep else ANONYMOUS


@dataclass(eq=False)
class Ticket:
    id: int
    caller: str
    user: str
    model: str
    what: str
    """What answers it: 'batched', 'alone (adapter NAME)', 'CAG cache', ..."""
    asked: float = field(default_factory=time.time)
    state: str = "queued"
    """'queued' until it holds a place in a batch or the exclusive slot, then 'running'."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    reason: str = ""

    def check(self) -> None:
        """Raise RequestCancelled once someone cancelled this request."""
        if self.cancelled.is_set():
            raise RequestCancelled(self.reason or "This request was cancelled.")


class RequestBoard:
    """Every model request in flight, per-user limits and cancelling."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._lock = threading.Lock()
        self._tickets: dict[int, Ticket] = {}
        self._ids = itertools.count(1)

    @contextmanager
    def track(self, caller: str, model: str, what: str) -> Iterator[Ticket]:
        """Hold a ticket for one request while it waits and runs. Refused with a QuotaError naming
        LAB_MAX_REQUESTS_PER_USER when the caller's user already has that many in flight."""
        user = caller_user(caller)
        with self._lock:
            mine = sum(1 for t in self._tickets.values() if t.user == user)
            if mine >= self.per_user:
                raise QuotaError(f"You have {mine} model requests in flight (the limit is LAB_MAX_REQUESTS_PER_USER="
                                 f"{self.per_user}); wait for some to finish, or cancel them, and ask again.")
            ticket = Ticket(next(self._ids), caller, user, model, what)
            self._tickets[ticket.id] = ticket
        try:
            yield ticket
        finally:
            with self._lock:
                self._tickets.pop(ticket.id, None)

    def cancel(self, ticket_id: int, reason: str) -> bool:
        """Cancel one request; False when it is no longer in flight."""
        with self._lock:
            ticket = self._tickets.get(ticket_id)
        if ticket is None:
            return False
        ticket.reason = reason
        ticket.cancelled.set()
        return True

    def cancel_caller(self, caller: str, reason: str) -> int:
        """Cancel every request of one caller id (a page's Compare question or Arena round); how many."""
        with self._lock:
            ids = [t.id for t in self._tickets.values() if t.caller == caller]
        return sum(self.cancel(i, reason) for i in ids)

    def get(self, ticket_id: int) -> Ticket | None:
        with self._lock:
            return self._tickets.get(ticket_id)

    def rows(self) -> list[dict]:
        """One dict per request in flight, oldest first (the System tab's table)."""
        now = time.time()
        with self._lock:
            tickets = sorted(self._tickets.values(), key=lambda t: t.id)
        return [{"id": t.id, "caller": t.caller, "user": t.user, "kind": t.caller.partition(":")[2] or t.caller, "model": t.model,
                 "what": t.what, "state": "cancelling" if t.cancelled.is_set() else t.state,
                 "age_s": round(now - t.asked, 1)} for t in tickets]


class FairGate:
    """Admission into one model's batch: at most `slots` at once and `per_user` of one user's, round-robin over
    users, and a user below a fair share (slots / users asking) goes in at once."""

    def __init__(self, slots: int, per_user: int | None = None) -> None:
        self.slots = slots
        self.per_user = min(per_user or slots, slots)
        self._cond = threading.Condition()
        self._running: Counter[str] = Counter()
        self._waiting: list[Ticket] = []

    def _order(self) -> list[Ticket]:
        """Waiting tickets in the order they will be admitted: each time, the first ticket of the user with the
        fewest running (ties: the earliest ticket)."""
        running = Counter(self._running)
        queues: dict[str, deque[Ticket]] = {}
        for ticket in self._waiting:
            queues.setdefault(ticket.user, deque()).append(ticket)
        order = []
        while queues:
            # A user at their cap comes after everyone below it (their next ticket waits for one of their own).
            user = min(queues, key=lambda u: (running[u] >= self.per_user, running[u], queues[u][0].id))
            order.append(queues[user].popleft())
            running[user] += 1
            if not queues[user]:
                del queues[user]
        return order

    def _may_enter(self, ticket: Ticket) -> bool:
        if self._running[ticket.user] >= self.per_user:
            return False
        if sum(self._running.values()) < self.slots and self._order()[0] is ticket:
            return True
        users = {u for u, n in self._running.items() if n} | {t.user for t in self._waiting}
        share = max(1, self.slots // len(users))
        first_of_user = next(t for t in self._waiting if t.user == ticket.user) is ticket
        return first_of_user and self._running[ticket.user] < share

    @contextmanager
    def admit(self, ticket: Ticket) -> Iterator[None]:
        """Wait for a place (raising RequestCancelled if the ticket is cancelled meanwhile), hold it, give it back."""
        with self._cond:
            self._waiting.append(ticket)
            try:
                while not self._may_enter(ticket):
                    ticket.check()
                    self._cond.wait(WAKE_S)
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()  # the order changed for everyone behind
            self._running[ticket.user] += 1
        try:
            yield
        finally:
            with self._cond:
                self._running[ticket.user] -= 1
                self._cond.notify_all()

    def position(self, caller: str) -> int | None:
        """1-based place of `caller`'s first waiting ticket in the admission order; None when it waits for none."""
        with self._cond:
            order = self._order()
        return next((i for i, t in enumerate(order, 1) if t.caller == caller), None)

    def snapshot(self) -> dict:
        with self._cond:
            return {"slots": self.slots, "per_user": self.per_user, "running": dict(+self._running),
                    "waiting": [t.caller for t in self._order()]}


class GpuQueue:
    """The exclusive slot: one holder at a time; the waiting user served longest ago goes next; callers can ask
    their position."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, str]] = []  # (arrival number, caller)
        self._holder: str | None = None
        self._holder_thread: int | None = None
        self._served: dict[str, int] = {}  # user -> grant number of their last turn
        self._arrivals = itertools.count()
        self._grants = itertools.count(1)

    def _order(self) -> list[tuple[int, str]]:
        """Waiting entries in the order they will get the slot: round-robin over users by their last turn."""
        served = dict(self._served)
        queues: dict[str, deque[tuple[int, str]]] = {}
        for entry in self._waiting:
            queues.setdefault(caller_user(entry[1]), deque()).append(entry)
        order, turn = [], max(served.values(), default=0)
        while queues:
            user = min(queues, key=lambda u: (served.get(u, 0), queues[u][0][0]))
            order.append(queues[user].popleft())
            turn += 1
            served[user] = turn
            if not queues[user]:
                del queues[user]
        return order

    @contextmanager
    def slot(self, caller: str, ticket: Ticket | None = None) -> Iterator[None]:
        with self._cond:
            entry = (next(self._arrivals), caller)
            self._waiting.append(entry)
            try:
                while self._holder is not None or self._order()[0] is not entry:
                    if ticket is not None:
                        ticket.check()
                    self._cond.wait(WAKE_S)
            finally:
                self._waiting.remove(entry)
                self._cond.notify_all()
            self._served[caller_user(caller)] = next(self._grants)
            self._holder, self._holder_thread = caller, threading.get_ident()
        try:
            yield
        finally:
            with self._cond:
                self._holder = self._holder_thread = None
                self._cond.notify_all()

    def position(self, caller: str) -> int | None:
        """0 = holding the slot now, n = n-th in line, None = not queued."""
        with self._cond:
            if self._holder == caller:
                return 0
            return next((i for i, (_, c) in enumerate(self._order(), 1) if c == caller), None)

    def held_here(self) -> str | None:
        """The caller holding the slot when this thread took it (the work under the slot asks whose it is)."""
        with self._cond:
            return self._holder if self._holder_thread == threading.get_ident() else None

    def snapshot(self) -> dict:
        with self._cond:
            return {"running": self._holder, "waiting": [c for _, c in self._order()]}
