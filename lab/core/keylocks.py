"""One lock per key, for work that must run once per key while work on other keys goes on beside it.

    python -c "from lab.core.keylocks import KeyedLocks; locks = KeyedLocks(); print(locks.in_use())"

A single global lock around "build it unless it is already built" makes every user wait for every other
user's build, even of an unrelated document. A lock per key keeps a build from running twice at once without
holding up anyone else. Keys come from user input (a document's hash and settings), so the table forgets a
key as soon as nobody holds or waits for its lock: it only ever holds the keys in use right now.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class KeyedLocks:
    """A mutex per key, created on first use and dropped when its last holder or waiter leaves."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}
        """key -> (its lock, [threads holding or waiting for it]); the count lives in a list to be updated in place."""

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold `key`'s lock for the body, waiting while another thread holds it."""
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if not users[0]:
                    del self._locks[key]

    def in_use(self) -> dict[str, int]:
        """Each key with a lock right now and how many threads hold or wait for it."""
        with self._guard:
            return {key: users[0] for key, (_, users) in self._locks.items()}
