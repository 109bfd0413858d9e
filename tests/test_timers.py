"""The one timer thread: callbacks in time order, cancellation, and a thread that survives bad callbacks and huge delays."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

import pytest

from concurry_ray import CallTimeoutError
from concurry_ray.deadlines import expire_after
from concurry_ray.futures import Future
from concurry_ray.limits.wakeup import Alarm
from concurry_ray.timers import call_at


def test_callbacks_run_in_time_order_not_in_the_order_scheduled():
    ran, done = [], threading.Event()
    now = time.monotonic()
    call_at(now + 0.15, lambda: (ran.append("late"), done.set()))
    call_at(now + 0.05, lambda: ran.append("early"))
    assert done.wait(5)
    assert ran == ["early", "late"]


def test_a_cancelled_callback_does_not_run():
    ran, done = [], threading.Event()
    now = time.monotonic()
    call_at(now + 0.05, lambda: ran.append("cancelled")).cancel()
    call_at(now + 0.1, done.set)
    assert done.wait(5)
    assert ran == []


def test_a_failing_callback_is_logged_and_the_thread_carries_on(caplog):
    def broken() -> None:
        raise RuntimeError("boom")

    done = threading.Event()
    with caplog.at_level(logging.ERROR, logger="concurry_ray"):
        call_at(time.monotonic(), broken)
        call_at(time.monotonic() + 0.05, done.set)
        assert done.wait(5)
    assert "timer callback failed" in caplog.text and "boom" in caplog.text


def test_a_huge_delay_does_not_stop_the_timer_thread():
    """call_timeout=1e10 used to kill the deadline thread (a wait too long for the OS), silently."""
    far, near = Future(), Future()
    expire_after(far, 1e10, "far()")
    time.sleep(0.1)  # the thread is waiting for the far deadline now
    expire_after(near, 0.05, "near()")
    with pytest.raises(CallTimeoutError, match=r"near\(\) did not finish within call_timeout=0.05s"):
        near.result(timeout=5)
    assert not far.done()
    far.set_result(None)


def test_a_finished_call_leaves_nothing_behind_on_the_timer():
    future = Future()
    expire_after(future, 1e6, "done()")
    future.set_result(1)
    gone = weakref.ref(future)
    del future
    gc.collect()
    assert gone() is None


def test_an_alarm_keeps_the_earliest_time_asked_for():
    rang = []
    alarm = Alarm(lambda: rang.append(time.monotonic()))
    now = time.monotonic()
    alarm.at(now + 1.0)
    alarm.at(now + 0.05)  # replaces the ring at 1.0
    alarm.at(now + 0.5)  # later than the time already set: no second ring
    time.sleep(1.3)
    assert len(rang) == 1 and rang[0] - now < 0.5
