"""TaskWorker (submit, map) and the @task decorator, in every mode."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import pytest
from conftest import ALL_MODES, POOL_MODES

from concurry_ray import PoolStoppedError, Task, TaskWorker, task

PICKLED: list = []
CALLS: dict = {}


def slow_identity(x, seconds=0.3):
    time.sleep(seconds)
    return x


def square(x):
    return x * x


async def async_add(x, y):
    await asyncio.sleep(0.01)
    return x + y


def fail_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def flaky(key, failures):
    """Fails the first ``failures`` calls per key (state lives in the worker's process)."""
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] <= failures:
        raise ConnectionError(f"{key}: call {CALLS[key]}")
    return CALLS[key]


class CountsPickling:
    """A callable that records (in the caller's process) every time it is pickled."""

    def __call__(self, x):
        return x + 1

    def __reduce__(self):
        PICKLED.append(1)
        return (CountsPickling, ())


@task(mode="thread", max_workers=2)
def cube(x):
    return x**3


@pytest.mark.parametrize("mode", ALL_MODES)
def test_submit_and_map_in_every_mode(mode, mode_opts):
    with TaskWorker.options(**mode_opts(mode)).init() as pool:
        assert pool.submit(square, 7).result(timeout=30) == 49
        assert pool.submit(async_add, 2, y=3).result(timeout=30) == 5
        assert pool.submit(lambda: "lambda").result(timeout=30) == "lambda"
        assert list(pool.map(square, range(6))) == [0, 1, 4, 9, 16, 25]
        assert list(pool.map(async_add, [1, 2], [10, 20])) == [11, 22]


@pytest.mark.parametrize("mode", POOL_MODES)
def test_map_runs_in_parallel_over_the_whole_pool_in_order(mode, mode_opts):
    with TaskWorker.options(**mode_opts(mode, max_workers=4)).init() as pool:
        assert list(pool.map(slow_identity, range(4), [0.01] * 4)) == [0, 1, 2, 3]
        start = time.monotonic()
        results = list(pool.map(slow_identity, [3, 1, 2, 0]))
        elapsed = time.monotonic() - start
    assert results == [3, 1, 2, 0]
    assert elapsed < 0.9, f"4 items of 0.3 s on 4 workers took {elapsed:.2f} s"


def test_map_uses_on_demand_workers(mode_opts):
    with TaskWorker.options(**mode_opts("thread", on_demand=True, max_workers=4)).init() as pool:
        start = time.monotonic()
        idents = list(pool.map(lambda _: (time.sleep(0.2), threading.get_ident())[1], range(8)))
        elapsed = time.monotonic() - start
    assert len(set(idents)) >= 2 and elapsed < 1.2, (len(set(idents)), elapsed)


def test_buffersize_bounds_items_in_flight_on_a_huge_generator():
    pulled = [0]

    def items():
        for i in range(10_000):
            pulled[0] += 1
            yield i

    with TaskWorker.options(mode="thread", max_workers=4).init() as pool:
        results = pool.map(square, items(), buffersize=8)
        assert pulled[0] == 8, "map() submits the first window at once and reads no further"
        for consumed, value in enumerate(results, start=1):
            assert value == (consumed - 1) ** 2
            assert pulled[0] - consumed <= 8
        assert consumed == 10_000 == pulled[0]
        lazy = pool.map(square, items())
        assert next(lazy) == 0
        lazy.close()
        assert pulled[0] - 10_000 == 64 + 1, "default window: 64 in flight after one was consumed"


def test_map_timeout_and_failing_item():
    with TaskWorker.options(mode="thread", max_workers=2).init() as pool:
        results = pool.map(fail_on_three, range(6))
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="three"):
            next(results)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            list(pool.map(slow_identity, [1, 2], [0.01, 0.8], timeout=0.2))
        assert time.monotonic() - start < 0.6
        with pytest.raises(ValueError, match="buffersize=0"):
            pool.map(square, range(3), buffersize=0)


def test_map_progress_bar_counts_results():
    out = io.StringIO()
    with TaskWorker.options(mode="thread", max_workers=2).init() as pool:
        results = list(pool.map(square, range(10), progress={"file": out, "desc": "squares"}))
    assert results == [x * x for x in range(10)]
    assert "squares" in out.getvalue() and "10/10" in out.getvalue()


@pytest.mark.parametrize("mode", ["process", "ray"])
def test_functions_are_pickled_once_per_handle(mode, mode_opts):
    PICKLED.clear()
    fn = CountsPickling()
    with TaskWorker.options(**mode_opts(mode, max_workers=2)).init() as pool:
        assert [pool.submit(fn, i).result(timeout=30) for i in range(10)] == list(range(1, 11))
        assert list(pool.map(fn, range(20))) == list(range(1, 21))
    assert len(PICKLED) == 1, f"pickled {len(PICKLED)} times"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_retries_apply_to_submitted_functions(mode, mode_opts):
    opts = mode_opts(mode, num_retries={"*": 0, "submit": 2}, retry_on=[ConnectionError], retry_wait=0.01)
    with TaskWorker.options(**opts).init() as pool:
        assert pool.submit(flaky, f"retried-{mode}", 2).result(timeout=30) == 3
        assert list(pool.map(flaky, [f"m1-{mode}", f"m2-{mode}"], [1, 1])) == [2, 2]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_task_decorator_binds_the_function_to_its_workers(mode, mode_opts):
    def triple(x):
        return 3 * x

    decorated = task(**mode_opts(mode))(triple)
    assert isinstance(decorated, Task) and decorated.__name__ == "triple"
    with decorated:
        assert decorated(2).result(timeout=30) == 6
        assert list(decorated.map(range(4))) == [0, 3, 6, 9]
    assert "not started" in repr(decorated)


@pytest.mark.parametrize("mode", POOL_MODES)
def test_module_level_task_travels_to_other_processes(mode, mode_opts):
    shifted = task(**mode_opts(mode, max_workers=2))(_shift)
    globals()["_shift"] = shifted  # as `@task def _shift` would leave it: the module name points at the Task
    try:
        with shifted:
            assert list(shifted.map(range(3))) == [100, 101, 102]
            assert shifted(1).result(timeout=30) == 101
    finally:
        globals()["_shift"] = shifted.__wrapped__


def _shift(x):
    return x + 100


def test_task_restarts_after_stop_and_honours_blocking():
    assert cube(2).result(timeout=10) == 8
    cube.stop()
    assert cube.submit(3).result(timeout=10) == 27, "a stopped task starts new workers on next use"
    assert cube.get_pool_stats()["total_workers"] == 2
    cube.stop()

    @task(mode="thread", blocking=True)
    async def add(x, y):
        return await async_add(x, y)

    with add:
        assert add(1, 2) == 3
        assert list(add.map([1], [1])) == [2]


def test_submit_checks_its_function_and_stopped_handles():
    pool = TaskWorker.options(mode="thread").init()
    with pytest.raises(TypeError, match="expected a function"):
        pool.submit(42)
    with pytest.raises(TypeError, match="got NoneType"):
        pool.submit(None)
    pool.stop()
    with pytest.raises(PoolStoppedError):
        pool.submit(square, 1)
