"""The Future's own condition (concurry_ray/conditions.py) keeps concurrent.futures' behaviour."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import pytest

from concurry_ray import Future
from concurry_ray.conditions import FutureCondition


def test_a_future_has_exactly_the_fields_of_a_stdlib_future():
    assert set(vars(Future())) == set(vars(cf.Future()))
    assert isinstance(Future()._condition, FutureCondition)


def test_result_times_out_and_leaves_no_waiter_behind():
    future = Future()
    start = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.05)
    assert 0.04 <= time.monotonic() - start < 2
    assert not future._condition._waiting
    with pytest.raises(cf.TimeoutError):
        future.exception(timeout=0)


def test_every_waiting_thread_is_woken_by_the_result():
    future = Future()
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(future.result(timeout=10))) for _ in range(5)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(future._condition._waiting or ()) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(future._condition._waiting) == 5
    woken_at = time.monotonic()
    future.set_result("done")
    for thread in threads:
        thread.join(timeout=5)
    assert got == ["done"] * 5
    assert time.monotonic() - woken_at < 2  # woken, not timed out (result() would still return after 10 s)
    assert not future._condition._waiting


def test_cancel_wakes_a_waiter_with_cancelled_error():
    future = Future()
    outcome: list = []

    def wait() -> None:
        try:
            future.result(timeout=10)
        except cf.CancelledError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.05)
    cancelled_at = time.monotonic()
    assert future.cancel()
    thread.join(timeout=5)
    assert time.monotonic() - cancelled_at < 2
    assert len(outcome) == 1 and isinstance(outcome[0], cf.CancelledError)


def test_stdlib_wait_and_as_completed_accept_our_futures():
    slow, fast = Future(), Future()
    threading.Timer(0.05, fast.set_result, args=(1,)).start()
    done, not_done = cf.wait([slow, fast], timeout=5, return_when=cf.FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    threading.Timer(0.05, slow.set_exception, args=(ValueError("slow failed"),)).start()
    finished = list(cf.as_completed([slow, fast], timeout=5))
    assert set(finished) == {slow, fast}
    assert isinstance(slow.exception(), ValueError)


def test_waiting_or_notifying_without_the_lock_is_refused():
    condition = FutureCondition()
    with pytest.raises(RuntimeError, match="un-acquired"):
        condition.wait(0)
    with pytest.raises(RuntimeError, match="un-acquired"):
        condition.notify()
    with condition:
        assert condition.wait(0.01) is False
        condition.notify_all()
