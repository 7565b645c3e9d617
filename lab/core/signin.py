"""Sign-in: passwords checked in constant time (plain or scrypt-hashed) behind a throttle per user and address.

    python -m lab hash-password alice          # prints alice:scrypt$16384$8$1$<salt>$<hash> for LAB_USERS_FILE

A stored password is either plain text or `scrypt$n$r$p$salt$hash`: the standard library's
`hashlib.scrypt` with cost n, block size r and parallelism p, a random 16-byte salt and a 32-byte
key, both base64. Every comparison goes through `hmac.compare_digest`, and an unknown user is
compared against a dummy value, so the time a refusal takes tells nothing about the password or
whether the user exists.

The throttle counts failures per user name and per client address. At `max_failures` (5 per
user, 10 per address by default) the key is locked for `lock_s` (60 s); each further failure
after a lock doubles the next one, up to `max_lock_s` (1 h). While locked every attempt is
refused without checking the password, even a right one: a guesser learns nothing. A success
clears the user's count but not the address's, so a guesser with an account of their own cannot
reset the address throttle. Counts are forgotten `forget_s` (15 min) after the last lock ends.
Every failure, lock and success is logged on the `lab.signin` logger with user, address and
counts, never the password.

Gradio calls the auth function with (username, password) only; `SignInMiddleware` (a plain ASGI
middleware app.py installs) puts the request's client address where `client_address()` finds it,
and turns a locked sign-in into a 429 answer that says how long to wait. The address is uvicorn's
view of the peer: behind a reverse proxy it is the proxy's, unless uvicorn trusts that proxy's
X-Forwarded-For (it does for 127.0.0.1 and ::1; others through FORWARDED_ALLOW_IPS).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

SCHEME = "scrypt"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
"""The cost of a new hash: 16 MiB of memory and about 50 ms per check (the parameters RFC 7914 suggests for
interactive logins)."""
SALT_BYTES, KEY_BYTES = 16, 32

log = logging.getLogger("lab.signin")

_CLIENT_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar("lab_client_address", default=None)


class SignInLocked(Exception):
    """Too many failed sign-ins for this user or address; the message says how long to wait."""


# ---- passwords ------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P,
                  salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` for `password`, with a fresh random salt unless one is given."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r, p), dklen=KEY_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


def _maxmem(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2) + 2**20  # scrypt's own need, plus room; OpenSSL refuses more than maxmem


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, key) of a stored hash; ValueError (never echoing the value) when it is malformed."""
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ValueError
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = (base64.b64decode(x, validate=True) for x in parts[4:6])
    except (ValueError, binascii.Error):
        raise ValueError("is not scrypt$n$r$p$salt$hash (make one with `python -m lab hash-password NAME`)") from None
    # Bounds keep a typo from asking for gigabytes per sign-in: n a power of two up to 2**20 (1 GiB at r=8).
    if not (1 < n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16 and salt and len(key) >= 16):
        raise ValueError("has scrypt parameters out of range (n a power of two up to 2**20, r 1-32, p 1-16, a salt "
                         "and a key of at least 16 bytes)")
    return n, r, p, salt, key


def is_hashed(stored: str) -> bool:
    return stored.startswith(SCHEME + "$")


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored` (plain text or a scrypt hash), compared in constant time."""
    if not is_hashed(stored):
        return hmac.compare_digest(password.encode(), stored.encode())
    n, r, p, salt, key = _parse(stored)
    given = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r, p), dklen=len(key))
    return hmac.compare_digest(given, key)


# ---- the throttle ---------------------------------------------------------------------------------
@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last: float = 0.0


@dataclass
class Throttle:
    """Failure counts and locks per key ('user:alice', 'address:10.0.0.1'); `clock` is injectable for tests."""
    max_failures: int = 5
    """Failures of one user name before it is locked."""
    max_failures_per_address: int = 10
    """Failures from one address (any user names) before it is locked: higher, as a team may share one address."""
    lock_s: float = 60.0
    """The first lock; each failure after a lock doubles the next one."""
    max_lock_s: float = 3600.0
    forget_s: float = 900.0
    """A key's count is forgotten this long after its last failure or lock ended."""
    clock: Callable[[], float] = time.monotonic
    _records: dict[str, _Record] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def seconds_locked(self, key: str) -> float:
        with self._lock:
            record = self._records.get(key)
            return max(0.0, record.locked_until - self.clock()) if record else 0.0

    def failed(self, key: str, limit: int) -> tuple[int, float]:
        """Count a failure; (failures so far, seconds the key is now locked for, 0 if not locked)."""
        with self._lock:
            now = self.clock()
            self._forget(now)
            record = self._records.setdefault(key, _Record())
            record.failures += 1
            record.last = now
            lock = 0.0
            if record.failures >= limit:
                lock = min(self.lock_s * 2 ** (record.failures - limit), self.max_lock_s)
                record.locked_until = now + lock
            return record.failures, lock

    def clear(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)

    def _forget(self, now: float) -> None:
        # Also bounds memory when a guesser tries many names or addresses: each is dropped forget_s after its last.
        for key in [k for k, r in self._records.items() if now > max(r.last, r.locked_until) + self.forget_s]:
            del self._records[key]


# ---- sign-in --------------------------------------------------------------------------------------
def client_address() -> str | None:
    """The client address of the request being handled (set by ClientAddressMiddleware), None outside one."""
    return _CLIENT_ADDRESS.get()


class SignInMiddleware:
    """Plain ASGI middleware around the web app: remembers each request's client address for the auth function
    (gradio passes it only the name and password), and answers a locked sign-in with 429 and how long to wait
    instead of gradio's 'Incorrect credentials'."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        client = scope.get("client") if scope.get("type") in ("http", "websocket") else None
        token = _CLIENT_ADDRESS.set(client[0] if client else None)
        started = False

        async def watch(message: dict) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except SignInLocked as exc:
            if scope.get("type") != "http" or started:
                raise
            body = json.dumps({"detail": str(exc)}).encode()
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
        finally:
            _CLIENT_ADDRESS.reset(token)


class SignIn:
    """The auth function for gradio: `SignIn(pairs)(username, password) -> bool`, throttled and logged."""

    def __init__(self, users: Iterable[tuple[str, str]], throttle: Throttle | None = None) -> None:
        self.users = dict(users)
        self.throttle = throttle or Throttle()
        for user, stored in self.users.items():
            if is_hashed(stored):
                try:
                    _parse(stored)
                except ValueError as exc:
                    raise ValueError(f"The password of user {user!r} {exc}.") from None
        # An unknown name is checked against this, with the cost of a stored hash, so refusing it takes as long as
        # refusing a wrong password: the timing does not tell which names exist.
        hashed = [_parse(stored) for stored in self.users.values() if is_hashed(stored)]
        self._dummy = hash_password(secrets.token_hex(8), *hashed[0][:3]) if hashed else secrets.token_hex(8)

    def __call__(self, username: str, password: str) -> bool:
        return self.check(username, password, client_address())

    def log_name(self, username: str) -> str:
        """How the log names whoever tried: a known user by name; any other name by a short hash, because people
        type their password into the name field, and the log must not keep it. The hash still lets an admin see
        that the same unknown name keeps trying."""
        if username in self.users:
            return repr(username)
        return f"unknown user #{hashlib.sha256(username.encode()).hexdigest()[:8]}"

    def check(self, username: str, password: str, address: str | None = None) -> bool:
        """True for a right password; False for a wrong one; SignInLocked while the user or address is locked."""
        shown = self.log_name(username)
        keys = [(f"user:{username}", self.throttle.max_failures, "account")]
        if address:
            keys.append((f"address:{address}", self.throttle.max_failures_per_address, "address"))
        for key, _, what in keys:
            wait = self.throttle.seconds_locked(key)
            if wait > 0:
                log.warning("sign-in refused while locked: user %s from %s (%s locked for %.0f s more)",
                            shown, address, what, wait)
                raise SignInLocked(f"Too many failed sign-ins for this {what}; try again in {wait:.0f} s.")
        stored = self.users.get(username)
        ok = verify_password(password, stored if stored is not None else self._dummy) and stored is not None
        if ok:
            self.throttle.clear(keys[0][0])
            log.info("sign-in: user %s from %s", shown, address)
            return True
        counts, locks = [], []
        for key, limit, what in keys:
            failures, lock = self.throttle.failed(key, limit)
            counts.append(failures)
            if lock:
                locks.append(f"{what} locked for {lock:.0f} s")
        log.warning("sign-in failed: user %s from %s (%d failures for the user, %s for the address)%s",
                    shown, address, counts[0], counts[1] if address else "no count",
                    f"; {', '.join(locks)}" if locks else "")
        return False
