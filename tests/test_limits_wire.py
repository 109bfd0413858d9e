"""The served ledger over its connection, client and server in one process (what process and Ray modes use)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from concurry_ray import LimitsUnavailableError, ResourceLimit
from concurry_ray.limits import client as registry
from concurry_ray.limits.client import RemoteHolder
from concurry_ray.limits.ledger import Ledger
from concurry_ray.limits import server as server_module
from concurry_ray.limits.server import Server, hang_up


@pytest.fixture
def served():
    ledger = Ledger([ResourceLimit("slots", 2)])
    server = Server(ledger)
    clients = []

    def client() -> RemoteHolder:
        clients.append(RemoteHolder(f"client-{len(clients)}", server.locator))
        return clients[-1]

    yield ledger, server, client
    server.close()


def held(ledger: Ledger) -> float:
    return ledger.stats()["limits"]["slots"]["used"]


def test_grants_wait_and_release_through_the_connection(served):
    ledger, _, client = served
    first, second = client(), client()
    a = first.acquire({"slots": 2}, None)
    assert held(ledger) == 2
    assert second.acquire({"slots": 1}, 0) is None  # try: answered at once
    got = []
    waiter = threading.Thread(target=lambda: got.append(second.acquire({"slots": 1}, 5)))
    waiter.start()
    time.sleep(0.05)
    assert got == [] and ledger.stats()["waiting"] == 1
    first.release(a, None)
    waiter.join(5)
    assert got and got[0] is not None
    second.release(got[0], None)
    assert second.stats()["limits"]["slots"]["used"] == 0  # same connection: after the release


def test_timeout_withdraws_the_request(served):
    _, _, client = served
    first, second = client(), client()
    first.acquire({"slots": 2}, None)
    start = time.monotonic()
    assert second.acquire({"slots": 1}, 0.1) is None
    assert 0.1 <= time.monotonic() - start < 1
    assert second.stats()["waiting"] == 0  # the withdrawal is sent without waiting; stats come after it


def test_async_acquire_and_cancellation_through_the_connection(served):
    ledger, _, client = served
    first, second = client(), client()

    async def main() -> None:
        grant = await first.acquire_async({"slots": 2}, None)
        assert await second.acquire_async({"slots": 1}, 0.05) is None
        task = asyncio.ensure_future(second.acquire_async({"slots": 1}, None))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        first.release(grant, None)

    asyncio.run(main())
    time.sleep(0.1)  # releases are sent without waiting for an answer
    assert held(ledger) == 0 and ledger.stats()["waiting"] == 0


def test_a_closed_connection_releases_what_it_held(served):
    ledger, _, client = served
    dying = client()
    dying.acquire({"slots": 2}, None)
    hang_up(dying._conn)  # what the kernel does when the worker process is killed
    other = client()
    assert other.acquire({"slots": 2}, 5) is not None


def test_a_holder_that_is_gone_fails_waiters_and_new_requests(served):
    _, server, client = served
    first, second = client(), client()
    grant = first.acquire({"slots": 2}, None)
    errors = []

    def wait() -> None:
        try:
            second.acquire({"slots": 1}, 10)
        except LimitsUnavailableError as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.05)
    server.close()
    waiter.join(5)
    assert errors and "closed the connection" in str(errors[0])
    first.release(grant, None)  # never an error
    with pytest.raises(LimitsUnavailableError, match="refused the connection"):
        second.acquire({"slots": 1}, None)


@pytest.mark.parametrize("attempt", range(6))  # close() ends sessions in set order; either order must hold
def test_closing_never_hands_a_closing_sessions_grant_to_another(attempt, monkeypatch):
    server = Server(Ledger([ResourceLimit("slots", 2)]))
    first, second = (RemoteHolder(f"client-{i}", server.locator) for i in range(2))
    first.acquire({"slots": 2}, None)
    outcomes = []

    def wait() -> None:
        try:
            outcomes.append(second.acquire({"slots": 1}, 10))
        except LimitsUnavailableError as exc:
            outcomes.append(exc)

    def hang_up_and_let_it_release(conn) -> None:
        # The worst timing: each session's reader releases its grants before close() goes on.
        hang_up(conn)
        deadline = time.monotonic() + 5
        while any(s.conn is conn for s in list(server._sessions)) and time.monotonic() < deadline:
            time.sleep(0.005)

    monkeypatch.setattr(server_module, "hang_up", hang_up_and_let_it_release)
    waiter = threading.Thread(target=wait)
    waiter.start()
    deadline = time.monotonic() + 5
    while not any(s._waiters for s in list(server._sessions)) and time.monotonic() < deadline:
        time.sleep(0.005)
    server.close()
    waiter.join(5)
    assert len(outcomes) == 1 and "closed the connection" in str(outcomes[0]), outcomes


def test_a_forgotten_holder_gets_a_new_client(served):
    """What remove_holder() relies on: a removed holder's client is dropped, so this process's
    registry of clients does not grow with every Ray pool that has limits."""
    _, server, _ = served
    before = registry.count()
    first = registry.client_for(RemoteHolder, "test-forget", server.locator, None, frozenset())
    assert registry.client_for(RemoteHolder, "test-forget", server.locator, None, frozenset()) is first
    assert registry.count() == before + 1
    registry.forget("test-forget")
    assert registry.count() == before
    assert registry.client_for(RemoteHolder, "test-forget", server.locator, None, frozenset()) is not first
    registry.forget("test-forget")
