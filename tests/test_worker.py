"""Behaviour of a single worker in every mode."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import traceback
from concurrent.futures import CancelledError

import pytest
from conftest import ALL_MODES
from workers import BrokenInit, Counter

from concurry_ray import (
    CallTimeoutError,
    ConfigError,
    Future,
    PoolStoppedError,
    SerializationError,
    WorkerCrashedError,
    WorkerInitError,
    gather,
)

CROSS_PROCESS = ["process", "ray"]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_method_returns_future_and_keeps_state(mode, mode_opts):
    with Counter.options(**mode_opts(mode)).init(start=10, step=5) as w:
        futures = [w.incr() for _ in range(3)]
        assert all(isinstance(f, Future) for f in futures)
        assert [f.result(timeout=30) for f in futures] == [15, 20, 25]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_exception_type_message_and_traceback(mode, mode_opts):
    with Counter.options(**mode_opts(mode)).init() as w:
        future = w.fail("missing-key")
        error = future.exception(timeout=30)
        assert type(error) is KeyError
        assert "missing-key" in str(error)
        text = "".join(traceback.format_exception(error))
        assert "in fail" in text and "raise KeyError(message)" in text
        with pytest.raises(KeyError, match="missing-key"):
            future.result()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_blocking_mode_returns_values(mode, mode_opts):
    with Counter.options(**mode_opts(mode, blocking=True)).init(start=1) as w:
        assert w.incr() == 2
        assert w.add(1, 2, 3) == 6
        with pytest.raises(KeyError):
            w.fail("x")


@pytest.mark.parametrize("mode", ALL_MODES)
def test_context_manager_stops_on_exception(mode, mode_opts):
    with pytest.raises(RuntimeError, match="inside"):
        with Counter.options(**mode_opts(mode)).init() as w:
            assert w.incr().result(timeout=30) == 1
            raise RuntimeError("inside")
    with pytest.raises(PoolStoppedError, match="stopped"):
        w.incr()
    assert "stopped" in repr(w)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_async_methods_run_concurrently(mode, mode_opts):
    with Counter.options(**mode_opts(mode)).init() as w:
        w.asleep(0).result(timeout=30)
        start = time.monotonic()
        assert gather([w.asleep(0.2) for _ in range(10)], timeout=30) == [0.2] * 10
        assert time.monotonic() - start < 0.8


@pytest.mark.parametrize("mode", ALL_MODES)
def test_future_can_be_awaited(mode, mode_opts):
    with Counter.options(**mode_opts(mode)).init() as w:

        async def main():
            return await w.add(2, 3), await w.asleep(0.01)

        assert asyncio.run(main()) == (5, 0.01)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_argument_futures_do_not_block_submit(mode, mode_opts):
    with Counter.options(**mode_opts(mode)).init() as upstream, Counter.options(**mode_opts(mode)).init() as w:
        upstream.echo(0).result(timeout=30)
        w.echo(0).result(timeout=30)
        slow = upstream.asleep(0.6)
        start = time.monotonic()
        nested = w.echo([slow, {"k": upstream.add(1, 2)}, (upstream.add(3, 4),)])
        direct = w.add(slow, 1)
        assert time.monotonic() - start < 0.3, "submit waited for an argument future"
        assert nested.result(timeout=30) == [0.6, {"k": 3}, (7,)]
        assert direct.result(timeout=30) == 1.6


@pytest.mark.parametrize("mode", ALL_MODES)
def test_failed_argument_future_fails_the_call(mode, mode_opts):
    with Counter.options(**mode_opts(mode)).init() as w:
        with pytest.raises(KeyError, match="upstream"):
            w.echo(w.fail("upstream")).result(timeout=30)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_constructor_error_surfaces_at_init(mode, mode_opts):
    with pytest.raises(WorkerInitError, match="bad value 7") as info:
        BrokenInit.options(**mode_opts(mode)).init(7)
    assert isinstance(info.value.__cause__, ValueError)
    assert "bad value 7" in str(info.value.__cause__)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_unknown_method_is_attribute_error(mode, mode_opts):
    with Counter.options(**mode_opts(mode)).init() as w:
        with pytest.raises(AttributeError, match="did you mean 'incr'"):
            w.inc()


@pytest.mark.parametrize("mode", CROSS_PROCESS)
def test_unpicklable_argument_result_and_exception(mode, mode_opts):
    with Counter.options(**mode_opts(mode)).init() as w:
        with pytest.raises(SerializationError, match="argument 0 of echo\\(\\) of type lock cannot be pickled"):
            w.echo(threading.Lock()).result(timeout=30)
        with pytest.raises(SerializationError, match="argument value= of echo\\(\\) of type lock"):
            w.echo(value=threading.Lock()).result(timeout=30)
        with pytest.raises(SerializationError, match="lock"):
            w.make_lock().result(timeout=30)
        with pytest.raises(SerializationError, match="UnpicklableError"):
            w.raise_unpicklable().result(timeout=30)
        assert w.incr().result(timeout=30) == 1


@pytest.mark.parametrize("mode", CROSS_PROCESS)
def test_lambdas_and_local_classes_travel(mode, mode_opts):
    class Local:
        def __init__(self, x):
            self.x = x

    with Counter.options(**mode_opts(mode)).init() as w:
        fn = w.echo(lambda v: v * 3).result(timeout=30)
        assert fn(2) == 6
        assert w.echo(Local(4)).result(timeout=30).x == 4


@pytest.mark.parametrize("mode", CROSS_PROCESS)
def test_killed_worker_fails_call_promptly_and_is_replaced(mode, mode_opts):
    with Counter.options(**mode_opts(mode)).init() as w:
        pid = w.pid().result(timeout=30)
        running = w.sleep(30)
        behind = w.add(1, 1)  # a Ray handle has sent it to the actor already (two tasks in flight)
        queued = w.add(2, 2)  # still in the handle (or the worker's own queue)
        time.sleep(0.3)
        start = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError, match="sleep"):
            running.result(timeout=10)
        assert time.monotonic() - start < 5
        assert queued.result(timeout=30) == 4, "a call that had not started must run on the replacement"
        if mode == "ray":  # its reply may have been lost with the actor: it fails rather than run twice
            with pytest.raises(WorkerCrashedError, match="it may have started, so it is not run again"):
                behind.result(timeout=30)
        else:  # a process worker reports each outcome before it starts the next call
            assert behind.result(timeout=30) == 2
        assert w.pid().result(timeout=30) != pid
        reran = sum(f.exception() is None for f in (behind, queued))
        expected = {"restarts": 1, "in_flight": 0, "completed": 2 + reran, "failed": 3 - reran}  # pid() twice, add()s
        deadline = time.monotonic() + 10
        while True:  # Ray handles report their counters in the background
            worker = w.get_pool_stats()["workers"][0]
            if {k: worker[k] for k in expected} == expected or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert {k: worker[k] for k in expected} == expected, "a re-sent call must be counted once"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_async_call_running_at_the_stop_deadline_is_cancelled(mode, mode_opts):
    w = Counter.options(**mode_opts(mode)).init()
    running = w.asleep(20)
    time.sleep(0.2)
    w.stop(timeout=0.3)
    with pytest.raises(CancelledError, match="cancel"):
        running.result(timeout=10)


def test_crashed_process_worker_leaves_no_threads_behind(mode_opts):
    with Counter.options(**mode_opts("process", name="Crashy")).init() as w:
        os.kill(w.pid().result(timeout=30), signal.SIGKILL)
        with pytest.raises(WorkerCrashedError):
            w.sleep(5).result(timeout=10)
        deadline = time.monotonic() + 5
        while any(t.name.startswith("Crashy#0") for t in threading.enumerate()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [t.name for t in threading.enumerate() if t.name.startswith("Crashy#0")] == []
        assert w.incr().result(timeout=30) == 1


@pytest.mark.parametrize("mode", ALL_MODES)
def test_repr_shows_mode_and_state(mode, mode_opts):
    w = Counter.options(**mode_opts(mode)).init()
    assert repr(w) == f"<Counter worker, mode={mode!r}, running>"
    w.stop()
    w.stop()
    assert repr(w) == f"<Counter worker, mode={mode!r}, stopped>"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_stop_drains_queued_calls(mode, mode_opts):
    w = Counter.options(**mode_opts(mode)).init()
    futures = [w.sleep(0.05) for _ in range(4)]
    w.stop()
    assert [f.result(timeout=0) for f in futures] == [0.05] * 4


@pytest.mark.parametrize("mode", ["thread", "process", "ray"])
def test_stop_timeout_cancels_what_is_left(mode, mode_opts):
    w = Counter.options(**mode_opts(mode)).init()
    w.incr().result(timeout=30)
    first = w.sleep(0.3)
    rest = [w.sleep(20) for _ in range(3)]
    start = time.monotonic()
    w.stop(timeout=3.0)
    assert time.monotonic() - start < 10
    assert first.result(timeout=5) == 0.3
    for future in rest[1:]:
        with pytest.raises(Exception) as info:
            future.result(timeout=10)
        assert "cancel" in type(info.value).__name__.lower() or "cancel" in str(info.value).lower()


def test_aliases_are_accepted():
    for alias, canonical in [("threads", "thread"), ("synchronous", "sync"), ("async", "asyncio")]:
        with Counter.options(mode=alias).init() as w:
            assert w.get_pool_stats()["mode"] == canonical


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "threed"}, "mode='threed' is not a known ExecutionMode (did you mean 'Threads'?)"),
        ({"max_wrokers": 3}, "'max_wrokers' (did you mean 'max_workers'?)"),
        ({"mode": "sync", "max_workers": 3}, "max_workers=3 is not allowed in mode 'sync'"),
        ({"mode": "asyncio", "max_workers": 2}, "max_workers=2 is not allowed in mode 'asyncio'"),
        ({"mode": "thread", "max_workers": -1}, "max_workers=-1 must be >= 0"),
        ({"mode": "thread", "max_workers": 0}, "max_workers=0 is only allowed with on_demand=True"),
        ({"mode": "thread", "load_balancing": "fastest"}, "load_balancing='fastest' is not a known LoadBalancingAlgorithm"),
        ({"mode": "thread", "max_queued_tasks": -2}, "max_queued_tasks=-2 must be >= 1"),
        ({"mode": "process", "mp_context": "threads"}, "mp_context='threads' is not one of"),
        ({"mode": "thread", "blocking": "maybe"}, "blocking='maybe'"),
    ],
)
def test_bad_options_raise_config_error(options, message):
    with pytest.raises(ConfigError) as info:
        Counter.options(**options)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("mode", ["asyncio", "thread", "process", "ray"])
def test_call_timeout_fails_slow_calls(mode, mode_opts):
    with Counter.options(**mode_opts(mode, call_timeout=0.5)).init() as w:
        assert w.sleep(0.01).result(timeout=30) == 0.01
        slow = w.sleep(2)
        with pytest.raises(CallTimeoutError, match=r"Counter.sleep\(\) did not finish within call_timeout=0.5s"):
            slow.result(timeout=30)
        assert isinstance(slow.exception(), TimeoutError)
