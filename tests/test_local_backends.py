"""What the local backends share: running a call into its future, and cancelling calls that will never finish."""

from __future__ import annotations

import concurrent.futures as cf

import pytest

from concurry_ray.futures import Future
from concurry_ray.protocol import Call
from local_backends._inflight import InFlight, cancel_each, run_call


class FakeHost:
    """The three things run_call asks of a host."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def is_async(self, method: str) -> bool:
        return method.startswith("a")

    def run(self, call: Call):
        self.ran.append(call.method)
        if call.method == "fail":
            raise ValueError("failed")
        return call.args[0]

    def run_on_loop(self, call: Call) -> cf.Future:
        self.ran.append(call.method)
        self.gate = cf.Future()
        return self.gate


def test_a_sync_call_settles_its_future_with_value_or_error():
    host, ok, bad = FakeHost(), Future(), Future()
    run_call(host, Call("echo", (5,), {}), ok)
    run_call(host, Call("fail", (), {}), bad)
    assert ok.result(0) == 5
    with pytest.raises(ValueError, match="failed"):
        bad.result(0)


def test_a_call_cancelled_before_it_started_does_not_run():
    host, future = FakeHost(), Future()
    future.cancel()
    run_call(host, Call("echo", (5,), {}), future)
    assert host.ran == [] and future.cancelled()


def test_an_async_call_is_tracked_until_it_settles():
    host, future, in_flight = FakeHost(), Future(), InFlight()
    run_call(host, Call("aecho", (), {}), future, in_flight)
    assert in_flight.snapshot() == [future] and future.running()
    host.gate.set_result(7)
    assert future.result(0) == 7 and in_flight.snapshot() == []


def test_an_async_call_cancelled_on_its_loop_is_cancelled_for_the_caller():
    host, future = FakeHost(), Future()
    run_call(host, Call("aecho", (), {}), future)
    host.gate.cancel()
    with pytest.raises(cf.CancelledError):
        future.result(0)


def test_cancel_each_cancels_waiting_calls_and_fails_running_ones():
    waiting, running, finished = Future(), Future(), Future()
    running.set_running_or_notify_cancel()
    finished.set_result(1)
    cancel_each([waiting, running, finished], lambda: cf.CancelledError("stopped"))
    assert waiting.cancelled()
    with pytest.raises(cf.CancelledError, match="stopped"):
        running.result(0)
    assert finished.result(0) == 1

