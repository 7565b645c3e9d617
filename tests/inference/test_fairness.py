"""Fair sharing: admission round-robin over users, a newcomer below their share goes in at once, per-user limits,
cancelling while waiting or decoding frees the place.

    .venv/bin/python -m pytest -q tests/inference/test_fairness.py
"""

from __future__ import annotations

import threading
from contextlib import ExitStack

import pytest

from lab.core.access import QuotaError
from lab.core.errors import RequestCancelled
from lab.inference.fairness import FairGate, GpuQueue, RequestBoard, caller_user
from lab.inference.generate import GenerationSettings, prompt_ids
from support import wait_until


def waiting_admit(gate, ticket, entered: list, release: threading.Event):
    def run():
        try:
            with gate.admit(ticket):
                entered.append(ticket.caller)
                release.wait(30)
        except RequestCancelled:
            entered.append(f"cancelled {ticket.caller}")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_caller_user():
    assert caller_user("alice:arena-3") == "alice"
    assert caller_user("eval-3") == "local"


def test_a_newcomer_below_a_fair_share_enters_a_full_batch_at_once():
    board, gate = RequestBoard(per_user=100), FairGate(slots=4)
    entered, release, stack = [], threading.Event(), ExitStack()
    bob = [stack.enter_context(board.track(f"bob:play-{i}", "m", "batched")) for i in range(10)]
    threads = [waiting_admit(gate, t, entered, release) for t in bob]
    wait_until(lambda: len(entered) == 4 and gate.snapshot()["waiting"] == [f"bob:play-{i}" for i in range(4, 10)])
    alice = stack.enter_context(board.track("alice:play-0", "m", "batched"))
    threads.append(waiting_admit(gate, alice, entered, release))
    wait_until(lambda: "alice:play-0" in entered)  # 5 running now: bob's 4 and alice's 1
    assert gate.snapshot()["running"] == {"bob": 4, "alice": 1}
    assert gate.position("bob:play-4") == 1
    release.set()
    for t in threads:
        t.join(30)
    stack.close()


def test_admission_alternates_between_users_when_places_free():
    board, gate = RequestBoard(per_user=100), FairGate(slots=2)
    tickets = {c: board.track(c, "m", "batched").__enter__() for c in
               ["bob:a-0", "bob:a-1", "bob:a-2", "bob:a-3", "carol:a-0", "carol:a-1"]}
    with gate.admit(tickets["bob:a-0"]), gate.admit(tickets["carol:a-0"]):
        order = []
        for c in ["bob:a-1", "bob:a-2", "bob:a-3", "carol:a-1"]:
            gate._waiting.append(tickets[c])  # queued in this arrival order, as waiting threads would be
        order = [t.caller for t in gate._order()]
        gate._waiting.clear()
    assert order == ["bob:a-1", "carol:a-1", "bob:a-2", "bob:a-3"]


def test_the_exclusive_slot_goes_round_robin_over_users():
    queue = GpuQueue()
    entered, stop = [], threading.Event()
    holder_in = threading.Event()

    def hold():
        with queue.slot("bob:x-0"):
            holder_in.set()
            stop.wait(30)
    threading.Thread(target=hold, daemon=True).start()
    holder_in.wait(10)

    def wait_for(caller):
        with queue.slot(caller):
            entered.append(caller)
    threads = []
    for caller in ["bob:x-1", "bob:x-2", "bob:x-3", "alice:x-0"]:
        threads.append(threading.Thread(target=wait_for, args=(caller,), daemon=True))
        threads[-1].start()
        wait_until(lambda c=caller: queue.position(c) is not None)
    assert queue.position("alice:x-0") == 1  # alice was never served: she goes before bob's backlog
    stop.set()
    for t in threads:
        t.join(30)
    assert entered == ["alice:x-0", "bob:x-1", "bob:x-2", "bob:x-3"]


def test_a_user_over_the_limit_is_refused_naming_it():
    board = RequestBoard(per_user=2)
    with board.track("bob:a-0", "m", "batched"), board.track("bob:a-1", "m", "batched"):
        with pytest.raises(QuotaError, match="LAB_MAX_REQUESTS_PER_USER=2"):
            with board.track("bob:a-2", "m", "batched"):
                pass
        with board.track("alice:a-0", "m", "batched"):  # another user is not affected
            assert [r["user"] for r in board.rows()] == ["bob", "bob", "alice"]
    assert board.rows() == []


def test_a_request_cancelled_while_waiting_leaves_the_gate():
    board, gate = RequestBoard(per_user=10), FairGate(slots=1)
    entered, release = [], threading.Event()
    with board.track("bob:a-0", "m", "b") as first, board.track("bob:a-1", "m", "b") as second:
        threads = [waiting_admit(gate, first, entered, release)]
        wait_until(lambda: entered == ["bob:a-0"])
        threads.append(waiting_admit(gate, second, entered, release))
        wait_until(lambda: gate.position("bob:a-1") == 1)
        assert board.cancel(second.id, "cancelled by a test")
        wait_until(lambda: "cancelled bob:a-1" in entered)
        assert gate.snapshot()["waiting"] == []
        release.set()
        for t in threads:
            t.join(30)


def test_cancelling_a_batched_request_stops_it_and_frees_its_place(tiny_engine):
    sessions, spec = tiny_engine.sessions, tiny_engine.runtime.spec()
    tokenizer = sessions.model(spec).tokenizer
    ids = prompt_ids(tokenizer, "the model")
    with sessions.lend(spec, GenerationSettings(max_new_tokens=400), "alice:play-1") as (_, run):
        stream = run(ids)
        next(stream)
        [row] = tiny_engine.requests.running_requests()
        assert (row["user"], row["state"]) == ("alice", "running")
        assert tiny_engine.requests.cancel_request(row["id"], "alice")
        with pytest.raises(RequestCancelled, match="cancelled by its owner"):
            for _ in stream:
                pass
    assert tiny_engine.requests.running_requests() == []
    engine = sessions.engine_for(spec)
    wait_until(lambda: engine.stats()["running"] == 0)
    assert sessions.gate(spec).snapshot()["running"] == {}


def test_only_the_owner_or_an_admin_cancels(tiny_engine):
    tiny_engine.settings.auth = "alice:a,bob:b,carol:c"
    tiny_engine.settings.admins = "carol"
    with tiny_engine.sessions.board.track("alice:play-1", "m", "batched") as ticket:
        with pytest.raises(PermissionError, match="belongs to alice; only they \\(or an admin"):
            tiny_engine.requests.cancel_request(ticket.id, "bob")
        assert tiny_engine.requests.cancel_request(ticket.id, "carol")
        assert "carol (admin)" in ticket.reason


def test_anonymous_visitors_are_told_apart_by_session(tiny_engine):
    one = tiny_engine.requests.new_caller("playground", "local", session="aaaaaaaaaaaaaaaa")
    two = tiny_engine.requests.new_caller("playground", "local", session="bbbbbbbbbbbbbbbb")
    assert caller_user(one) != caller_user(two)
    tiny_engine.settings.auth = "alice:a"
    assert caller_user(tiny_engine.requests.new_caller("playground", "alice", session="aaaa")) == "alice"


def test_one_user_decodes_at_most_per_user_at_once_even_with_room():
    board, gate = RequestBoard(per_user=100), FairGate(slots=16, per_user=3)
    entered, release, stack = [], threading.Event(), ExitStack()
    bob = [stack.enter_context(board.track(f"bob:p-{i}", "m", "b")) for i in range(6)]
    threads = [waiting_admit(gate, t, entered, release) for t in bob]
    wait_until(lambda: len(entered) == 3 and len(gate.snapshot()["waiting"]) == 3)
    alice = stack.enter_context(board.track("alice:p-0", "m", "b"))
    threads.append(waiting_admit(gate, alice, entered, release))
    wait_until(lambda: "alice:p-0" in entered)
    assert gate.snapshot()["running"] == {"bob": 3, "alice": 1}
    release.set()
    for t in threads:
        t.join(30)
    assert len(entered) == 7
    stack.close()


def test_a_closed_page_cancels_its_requests_and_only_its_own(tiny_engine):
    mine = tiny_engine.requests.new_caller("arena", "local", session="page-one-session")
    other = tiny_engine.requests.new_caller("arena", "local", session="page-two-session")
    board = tiny_engine.sessions.board
    with board.track(mine, "m", "batched") as a, board.track(mine, "m", "batched") as b, \
            board.track(other, "m", "batched") as c:
        assert tiny_engine.requests.cancel_page("page-one-session") == 2
        assert a.cancelled.is_set() and b.cancelled.is_set() and not c.cancelled.is_set()
        assert "page was closed" in a.reason
    assert tiny_engine.requests.cancel_page("page-one-session") == 0
