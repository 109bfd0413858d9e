"""Reliability of limits: silent peers, infinite timeouts, hostile messages, restarts, empty limit lists."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import socket
import tempfile
import threading
import time
from multiprocessing.connection import Client, Connection

import pytest
from conftest import wait_for

from concurry_ray import ConfigError, LimitPool, LimitSet, LimitsUnavailableError, RateLimit, ResourceLimit
from concurry_ray.limits.client import RemoteHolder
from concurry_ray.limits.ledger import Ledger
from concurry_ray.limits.pool_option import pool_limits
from concurry_ray.limits.server import Server, hang_up


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served():
    ledger = Ledger([ResourceLimit("slots", 2), RateLimit("tokens", 60, 100)])
    server = Server(ledger)
    yield ledger, server
    server.close()


def used(ledger: Ledger, key: str = "slots") -> float:
    return ledger.stats()["limits"][key]["used"]


def in_thread(action, seconds: float) -> list:
    """Run ``action`` in a thread for at most ``seconds``: [result], [exception], or [] if still running."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(action())
        except BaseException as exc:  # the test inspects it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome


# ----- #8: handshakes never block anyone else ------------------------------------------
def test_a_silent_peer_delays_no_other_client(served):
    ledger, server = served
    with socket.socket(socket.AF_UNIX) as silent:
        silent.connect(server.address)  # connects and never says a word
        time.sleep(0.1)
        client = RemoteHolder("after-silent", server.locator)
        start = time.monotonic()
        outcome = in_thread(lambda: client.acquire({"slots": 1}, 2), 5)
        assert outcome and isinstance(outcome[0], int), outcome
        assert time.monotonic() - start < 1
        assert used(ledger) == 1


def test_dialing_a_silent_holder_respects_the_timeout():
    with tempfile.TemporaryDirectory() as tmp, socket.socket(socket.AF_UNIX) as mute:
        path = os.path.join(tmp, "mute")
        mute.bind(path)
        mute.listen()  # connections are queued and never answered
        client = RemoteHolder("mute", (path, "AF_UNIX", b"k" * 32))
        start = time.monotonic()
        outcome = in_thread(lambda: client.acquire({"slots": 1}, 1), 5)
        assert outcome and (outcome[0] is None or isinstance(outcome[0], LimitsUnavailableError)), outcome
        assert time.monotonic() - start < 2


def reconnecting(server: Server, name: str) -> tuple[RemoteHolder, threading.Event]:
    """A client whose holder, once the connection drops, is found again only when the event is set
    (as while Ray restarts it)."""
    found = threading.Event()

    def relocate(seconds: float) -> tuple:
        found.wait(min(seconds, 10))
        return server.locator

    return RemoteHolder(name, server.locator, relocate), found


def while_reconnecting(client: RemoteHolder, found: threading.Event, action) -> tuple[list, float]:
    """Drop the client's connection (its reader then reconnects, holding the connection until ``found``
    is set), run ``action`` meanwhile, and return its outcome (see in_thread) and how long it took."""
    hang_up(client._conn)
    time.sleep(0.1)
    start = time.monotonic()
    outcome = in_thread(action, 5)
    elapsed = time.monotonic() - start
    found.set()
    return outcome, elapsed


def test_a_slow_reconnect_does_not_hold_an_acquire_past_its_timeout(served):
    _, server = served
    client, found = reconnecting(server, "reconnecting")
    assert client.acquire({"slots": 1}, 1) is not None
    outcome, elapsed = while_reconnecting(client, found, lambda: client.acquire({"slots": 1}, 1))
    assert outcome == [None] and elapsed < 2, (outcome, elapsed)


def test_a_release_during_a_slow_reconnect_returns_at_once_and_still_arrives(served):
    ledger, server = served
    client, found = reconnecting(server, "releasing")
    kept, returned = client.acquire({"slots": 1}, 1), client.acquire({"slots": 1}, 1)
    assert used(ledger) == 2
    outcome, elapsed = while_reconnecting(client, found, lambda: client.release(returned, None))
    assert outcome == [None] and elapsed < 1.5, (outcome, elapsed)
    wait_for(lambda: used(ledger) == 1, 5)  # the reconnect re-declared only the grant still held
    client.release(kept, None)
    wait_for(lambda: used(ledger) == 0, 5)


# ----- #17: an infinite timeout waits forever and leaks nothing ---------------------------
@pytest.mark.parametrize("through_pool", [False, True])
@pytest.mark.parametrize("timeout", [math.inf, 1e300])
def test_an_infinite_timeout_waits_as_long_as_needed(timeout, through_pool):
    limits = LimitSet([ResourceLimit("slots", 1)], shared=True)
    source = LimitPool([limits]) if through_pool else limits
    held = limits.acquire({"slots": 1})
    waiting = threading.Thread(target=lambda: outcome.append(source.acquire({"slots": 1}, timeout=timeout).release()))
    outcome: list = []
    waiting.start()
    time.sleep(0.1)
    held.release()
    waiting.join(5)
    assert outcome == [None] and not waiting.is_alive()
    assert limits.get_stats()["limits"]["slots"]["used"] == 0


def test_an_infinite_timeout_waits_in_async_code():
    limits = LimitSet([ResourceLimit("slots", 1)], shared=True)
    pool = LimitPool([limits])

    async def main() -> None:
        held = await limits.async_acquire({"slots": 1}, timeout=math.inf)
        waiters = [asyncio.ensure_future(source.async_acquire({"slots": 1}, timeout=math.inf)) for source in (limits, pool)]
        await asyncio.sleep(0.05)
        held.release()
        for waiter in waiters:
            (await asyncio.wait_for(waiter, 5)).release()

    asyncio.run(main())
    assert limits.get_stats()["limits"]["slots"]["used"] == 0


# ----- #18: the holder validates every message -----------------------------------------
@pytest.fixture
def wire(served):
    """A raw authenticated connection to the server: send(message) and answer()."""
    ledger, server = served
    conn: Connection = Client(server.address, server.family, authkey=server.authkey)

    def send(message) -> None:
        conn.send_bytes(pickle.dumps(message))

    def answer():
        assert conn.poll(5), "the holder did not answer"
        return pickle.loads(conn.recv_bytes())

    yield ledger, send, answer
    conn.close()


@pytest.mark.parametrize(
    "amounts",
    [
        {"slots": -5},
        {"slots": math.nan},
        {"slots": math.inf},
        {"slots": 3},
        {"slots": True},
        {"slots": "1"},
        {"nope": 1},
        ["slots"],
    ],
)
def test_a_bad_request_is_refused_and_the_session_lives_on(wire, amounts):
    ledger, send, answer = wire
    send(("acq", 1, amounts, True))
    rid, value = answer()
    assert rid == 1 and isinstance(value, ConfigError), value
    send(("acq", 2, {"slots": 2}, False))
    assert answer() == (2, True)
    assert used(ledger) == 2


@pytest.mark.parametrize(
    "message",
    [("close",), ("_close",), ("mute", 1), ("acq", 1), ("acq", "one", {"slots": 1}, True), "acq", (), ("stats", 1, 2)],
)
def test_unknown_or_malformed_operations_are_refused(wire, message):
    ledger, send, answer = wire
    send(message)
    _, value = answer()
    assert isinstance(value, ConfigError), value
    send(("stats", 7))
    rid, stats = answer()
    assert rid == 7 and stats["limits"]["slots"]["used"] == 0


def test_usage_above_the_grant_is_refused_and_counted_as_all_used(wire):
    ledger, send, answer = wire
    send(("acq", 1, {"tokens": 10}, False))
    assert answer() == (1, True)
    send(("rel", 1, {"tokens": -50}))
    rid, value = answer()
    assert rid == 1 and isinstance(value, ConfigError)
    assert used(ledger, "tokens") == 10  # not inflated by the negative usage


def test_a_reused_request_id_is_refused(wire):
    ledger, send, answer = wire
    send(("acq", 1, {"slots": 1}, False))
    assert answer() == (1, True)
    send(("acq", 1, {"slots": 1}, False))
    _, value = answer()
    assert isinstance(value, ConfigError)
    assert used(ledger) == 1


def test_adopting_more_than_the_capacity_is_refused(wire):
    ledger, send, answer = wire
    send(("adopt", 0, {1: {"slots": 2}, 2: {"slots": 2}, 3: {"slots": -9}}))
    assert answer() == (0, [2, 3])  # the leases that are gone
    assert used(ledger) == 2


# ----- #16: a restarted holder never exceeds a capacity -----------------------------------
def test_a_late_re_declaration_is_adopted_only_if_it_fits():
    clock = FakeClock()
    ledger = Ledger([ResourceLimit("slots", 2)], clock)
    ledger.saturate(grace=3)
    assert ledger.adopt({"slots": 1}) is not None  # reported in time
    clock.now += 4  # the grace period is over
    assert ledger.try_take({"slots": 1}) is not None
    assert ledger.adopt({"slots": 1}) is None  # late, and it no longer fits: the lease is gone
    assert used(ledger) == 2


# ----- limits=[] means no limits ------------------------------------------------------------
@pytest.mark.parametrize("empty", [[], ()])
@pytest.mark.parametrize("mode", ["thread", "process"])
def test_an_empty_limits_list_means_no_limits(empty, mode):
    assert pool_limits(empty, mode) is None
