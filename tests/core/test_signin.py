"""Sign-in: a throttle per user and per address, hashed or plain passwords, no password in the log.

    .venv/bin/python -m pytest -q tests/core/test_signin.py

The clock is injected, so locks expire without waiting; no assertion depends on timings.
"""

from __future__ import annotations

import hmac
import logging

import pytest

from lab.core import signin
from lab.core.signin import SignIn, SignInLocked, Throttle, hash_password, verify_password

PASSWORD = "correct horse battery"
WRONG = "tr0ub4dor-guess"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gate(clock) -> SignIn:
    # A cheap scrypt cost keeps the test fast; the scheme and the code path are the real ones.
    return SignIn([("alice", PASSWORD), ("bob", hash_password(PASSWORD, n=2**4))],
                  Throttle(max_failures=5, max_failures_per_address=8, lock_s=60, clock=clock))


def fail(gate: SignIn, user: str, address: str, times: int) -> None:
    for _ in range(times):
        assert gate.check(user, WRONG, address) is False


def test_plain_and_hashed_passwords(gate):
    assert gate.check("alice", PASSWORD, "10.0.0.1") and gate.check("bob", PASSWORD, "10.0.0.1")
    assert not gate.check("alice", WRONG, "10.0.0.1") and not gate.check("bob", WRONG, "10.0.0.1")
    assert not gate.check("carol", PASSWORD, "10.0.0.1")  # unknown user


def test_hash_format_is_the_documented_scrypt_line():
    line = hash_password(PASSWORD, n=2**4, r=8, p=1)
    scheme, n, r, p, salt, digest = line.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16", "8", "1") and salt and digest
    assert verify_password(PASSWORD, line) and not verify_password(WRONG, line)
    assert hash_password(PASSWORD, n=2**4) != line  # a fresh salt each time
    assert hash_password(PASSWORD).split("$")[1:4] == [str(signin.SCRYPT_N), str(signin.SCRYPT_R), str(signin.SCRYPT_P)]


def test_a_malformed_hash_is_refused_at_start_without_echoing_it():
    with pytest.raises(ValueError, match="alice") as error:
        SignIn([("alice", "scrypt$16$8$1$not-base64!$xx")])
    assert "not-base64" not in str(error.value)


def test_comparison_is_constant_time(gate, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(signin.hmac, "compare_digest", spy)
    assert gate.check("alice", PASSWORD, "a") and gate.check("bob", PASSWORD, "a")
    assert not gate.check("nobody", PASSWORD, "a")  # an unknown user is compared too (no timing oracle)
    assert len(calls) == 3 and all(t == (bytes, bytes) for t in calls)


def test_user_is_locked_after_repeated_failures_then_unlocked_after_the_delay(gate, clock):
    for address in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]:
        assert gate.check("alice", WRONG, address) is False  # five addresses: only the user's count locks
    with pytest.raises(SignInLocked, match="try again in 60 s"):
        gate.check("alice", PASSWORD, "10.0.0.9")  # even the right password, from anywhere
    assert gate.check("bob", PASSWORD, "10.0.0.9")  # other users are not affected
    clock.now += 61
    assert gate.check("alice", PASSWORD, "10.0.0.9")
    fail(gate, "alice", "10.0.0.9", 4)  # a success starts the count again
    assert gate.check("alice", PASSWORD, "10.0.0.9")


def test_lock_doubles_while_failures_go_on(gate, clock):
    fail(gate, "alice", "10.0.0.1", 5)
    clock.now += 61
    fail(gate, "alice", "10.0.0.2", 1)
    with pytest.raises(SignInLocked, match="120 s"):
        gate.check("alice", PASSWORD, "10.0.0.3")
    clock.now += 119
    with pytest.raises(SignInLocked):
        gate.check("alice", PASSWORD, "10.0.0.3")
    clock.now += 2
    assert gate.check("alice", PASSWORD, "10.0.0.3")


def test_address_is_locked_when_it_tries_many_users(gate, clock):
    for n in range(8):  # one guess per user name: no user reaches its own limit
        assert gate.check(f"user{n}", WRONG, "203.0.113.7") is False
    with pytest.raises(SignInLocked, match="address"):
        gate.check("alice", PASSWORD, "203.0.113.7")
    assert gate.check("alice", PASSWORD, "198.51.100.1")  # the same user from elsewhere
    clock.now += 61
    assert gate.check("alice", PASSWORD, "203.0.113.7")


def test_attempts_while_locked_check_no_password(gate, monkeypatch):
    fail(gate, "alice", "10.0.0.1", 5)
    monkeypatch.setattr(signin, "verify_password", lambda *a: pytest.fail("password checked while locked"))
    with pytest.raises(SignInLocked):
        gate.check("alice", PASSWORD, "10.0.0.1")


def test_log_names_user_address_and_count_never_the_password(gate, caplog):
    caplog.set_level(logging.INFO, logger="lab.signin")
    fail(gate, "alice", "10.0.0.1", 5)
    with pytest.raises(SignInLocked):
        gate.check("alice", WRONG + "x", "10.0.0.1")
    clock_free = SignIn([("alice", PASSWORD)])
    assert clock_free.check("alice", PASSWORD, "10.0.0.2")
    text = caplog.text
    assert "'alice'" in text and "10.0.0.1" in text and "5 failures" in text and "locked" in text
    assert WRONG not in text and PASSWORD not in text and "tr0ub4dor" not in text
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_the_address_comes_from_the_request_scope():
    seen = []

    async def app(scope, receive, send):
        seen.append(signin.client_address())

    import asyncio
    import threading

    def run(coro) -> None:
        # A fresh thread has no event loop, even when an earlier test left one running in this thread.
        worker = threading.Thread(target=asyncio.run, args=(coro,))
        worker.start()
        worker.join()

    middleware = signin.SignInMiddleware(app)
    run(middleware({"type": "http", "client": ("192.0.2.4", 5555)}, None, None))
    run(middleware({"type": "http", "client": None}, None, None))
    assert seen == ["192.0.2.4", None]
    assert signin.client_address() is None  # nothing leaks outside the request


def test_gradio_login_route_is_throttled_with_the_client_address(caplog):
    """The two pieces app.py's sign_in_options passes to launch(), through gradio's own /login route (no server)."""
    import gradio as gr
    from fastapi.testclient import TestClient
    from gradio.routes import App
    from starlette.middleware import Middleware

    with gr.Blocks() as demo:
        gr.Markdown("hi")
    demo.auth = SignIn([("alice", hash_password(PASSWORD, n=2**4))])
    client = TestClient(App.create_app(demo, app_kwargs={"middleware": [Middleware(signin.SignInMiddleware)]}))
    caplog.set_level(logging.INFO, logger="lab.signin")
    codes = [client.post("/login", data={"username": "alice", "password": WRONG}).status_code for _ in range(5)]
    locked = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert codes == [400] * 5
    assert locked.status_code == 429 and "try again in 60 s" in locked.json()["detail"]
    assert "from testclient" in caplog.text  # the address the middleware saw (TestClient's client host)


def test_hash_password_command_prints_a_line_that_signs_in(monkeypatch, capsys):
    import io

    from lab.cli import main
    from lab.core.settings import LabSettings
    from lab.core.users import load_users
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["hash-password", "alice"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("alice:scrypt$") and PASSWORD not in line
    users = load_users(LabSettings(auth=line))  # the line works in LAB_AUTH as in LAB_USERS_FILE
    assert SignIn(users).check("alice", PASSWORD, "10.0.0.1")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["hash-password", "alice"]) == 2 and "password is empty" in capsys.readouterr().err


def test_an_unknown_user_name_is_never_logged(gate, caplog):
    """A password typed into the name field must not reach the log: an unknown name is logged as a short hash."""
    caplog.set_level(logging.INFO, logger="lab.signin")
    assert gate.check("alicepw1", WRONG, "10.0.0.9") is False
    fail(gate, "mallory-secret", "10.0.0.8", 5)
    with pytest.raises(SignInLocked):
        gate.check("mallory-secret", WRONG, "10.0.0.8")
    text = caplog.text
    assert "alicepw1" not in text and "mallory-secret" not in text
    assert "unknown user" in text and "10.0.0.9" in text
    assert gate.check("alice", WRONG, "10.0.0.7") is False
    assert "'alice'" in caplog.text  # a known name is still named
