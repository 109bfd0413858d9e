"""Retries run on the worker that received the call, identically in every mode."""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
import time
from concurrent.futures import Future as CFuture

import pytest
from conftest import ALL_MODES

import concurry_ray
from concurry_ray import ConfigError, RetryValidationError, Worker, WorkerCrashedError, gather
from concurry_ray.enums import RetryAlgorithm
from concurry_ray.options import build_options
from concurry_ray.protocol import Call
from concurry_ray.pools.crashes import crash_retries, follow_crashes
from concurry_ray.retry import Backoff, RetryRunner, check_method_names

FAST = {"retry_wait": 0.01, "retry_jitter": 0.0}


class Flaky(Worker):
    """Fails the first ``failures`` calls per key; remembers when each attempt started."""

    def __init__(self):
        self.starts: dict = {}

    def _attempt(self, key: str) -> int:
        self.starts.setdefault(key, []).append(time.monotonic())
        return len(self.starts[key])

    def fail_times(self, key: str, failures: int) -> int:
        attempt = self._attempt(key)
        if attempt <= failures:
            raise ConnectionError(f"{key}: attempt {attempt} failed")
        return attempt

    async def afail_times(self, key: str, failures: int) -> int:
        await asyncio.sleep(0)
        attempt = self._attempt(key)
        if attempt <= failures:
            raise ConnectionError(f"{key}: attempt {attempt} failed")
        return attempt

    def bad_key(self, key: str) -> None:
        self._attempt(key)
        raise KeyError(key)

    def sequence(self, key: str, values: list):
        """Returns values[n-1] on the n-th attempt; an exception value is raised instead."""
        value = values[self._attempt(key) - 1]
        if isinstance(value, Exception):
            raise value
        return value

    def attempts(self, key: str) -> int:
        return len(self.starts.get(key, []))

    def gaps(self, key: str) -> list:
        starts = self.starts.get(key, [])
        return [b - a for a, b in zip(starts, starts[1:])]


def strict_filter(exception, attempt, method_name, worker_class, worker_class_name, args, kwargs, elapsed_time):
    """Accepts exactly the documented keywords (a TypeError otherwise); retries ``strict`` calls once."""
    assert worker_class is Flaky and worker_class_name == "Flaky" and 0 <= elapsed_time < 5
    return (
        isinstance(exception, ConnectionError)
        and (method_name, args, kwargs) == ("fail_times", ("strict",), {"failures": 5})
        and attempt < 2
    )


def at_least_three(result, attempt, method_name, **context):
    return result >= 3


@pytest.mark.parametrize("mode", ALL_MODES)
def test_transient_failures_are_retried_with_backoff(mode, mode_opts):
    opts = mode_opts(mode, num_retries=3, retry_algorithm="linear", retry_wait=0.05, retry_jitter=0.0)
    with Flaky.options(**opts).init() as w:
        assert w.fail_times("sync", 2).result(timeout=30) == 3
        assert w.afail_times("async", 2).result(timeout=30) == 3
        for key in ("sync", "async"):
            first, second = w.gaps(key).result(timeout=30)
            assert 0.05 <= first < 0.15 and 0.10 <= second < 0.20, (key, first, second)
        with pytest.raises(ConnectionError, match="attempt 4 failed") as info:
            w.fail_times("exhausted", 10).result(timeout=30)
        assert "gave up after 4 attempts" in "".join(getattr(info.value, "__notes__", []))
        assert w.attempts("exhausted").result(timeout=30) == 4


@pytest.mark.parametrize("mode", ALL_MODES)
def test_retry_on_filters_by_type_and_predicate(mode, mode_opts):
    opts = mode_opts(mode, num_retries=3, retry_on=[ConnectionError, strict_filter], **FAST)
    with Flaky.options(**opts).init() as w:
        with pytest.raises(KeyError):
            w.bad_key("not-retried").result(timeout=30)
        assert w.attempts("not-retried").result(timeout=30) == 1
        assert w.fail_times("typed", 3).result(timeout=30) == 4
    with Flaky.options(**mode_opts(mode, num_retries=3, retry_on=strict_filter, **FAST)).init() as w:
        with pytest.raises(ConnectionError):
            w.fail_times("strict", failures=5).result(timeout=30)
        assert w.attempts("strict").result(timeout=30) == 2, "the predicate allows exactly one retry"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_retry_until_validates_results(mode, mode_opts):
    with Flaky.options(**mode_opts(mode, num_retries=3, retry_until=at_least_three, **FAST)).init() as w:
        assert w.sequence("ok", [1, 2, 3, 4]).result(timeout=30) == 3
        with pytest.raises(RetryValidationError, match="rejected every attempt") as info:
            w.sequence("never", [0, ConnectionError("flaky"), 1, 2]).result(timeout=30)
        first, second, third, fourth = info.value.attempts
        assert (first, third, fourth) == (0, 1, 2)
        assert isinstance(second, ConnectionError)
        assert "attempt 2: raised ConnectionError: flaky" in str(info.value)
    with Flaky.options(**mode_opts(mode, retry_until=[at_least_three])).init() as w:
        with pytest.raises(RetryValidationError):
            w.sequence("once", [1]).result(timeout=30)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_per_method_options(mode, mode_opts):
    opts = mode_opts(
        mode,
        num_retries={"*": 0, "fail_times": 2},
        retry_wait={"*": 0.01, "fail_times": 0.1},
        retry_algorithm={"*": "exponential", "fail_times": "fixed"},
        retry_jitter=0.0,
    )
    with Flaky.options(**opts).init() as w:
        assert w.fail_times("listed", 2).result(timeout=30) == 3
        assert all(0.1 <= gap < 0.2 for gap in w.gaps("listed").result(timeout=30))
        with pytest.raises(ConnectionError):
            w.afail_times("default", 1).result(timeout=30)
        assert w.attempts("default").result(timeout=30) == 1


def test_jitter_is_honoured_in_the_worker(mode_opts):
    opts = mode_opts("thread", num_retries=6, retry_algorithm="fixed", retry_wait=0.05, retry_jitter=1.0)
    with Flaky.options(**opts).init() as w:
        w.fail_times("jitter", 6).result(timeout=30)
        gaps = w.gaps("jitter").result(timeout=30)
    assert all(0 <= gap < 0.05 + 0.03 for gap in gaps)
    assert min(gaps) < 0.04, f"with retry_jitter=1 the waits should vary below 0.05 s: {gaps}"


@pytest.mark.parametrize(
    "algorithm, expected",
    [
        ("exponential", [1, 2, 4, 8, 10]),
        ("linear", [1, 2, 3, 4, 5]),
        ("fibonacci", [1, 1, 2, 3, 5]),
        ("fixed", [1, 1, 1, 1, 1]),
    ],
)
def test_backoff_algorithms_and_cap(algorithm, expected):
    backoff = Backoff(algorithm, wait=1.0, jitter=0.0, max_wait=10)
    rng = random.Random(0)
    assert [backoff.seconds(n, rng) for n in range(1, 6)] == expected


def test_jitter_removes_a_random_fraction_of_the_wait():
    rng = random.Random(1)
    waits = [Backoff("fixed", wait=2.0, jitter=0.25).seconds(1, rng) for _ in range(200)]
    assert all(1.5 <= w <= 2.0 for w in waits)
    assert max(waits) - min(waits) > 0.4, "the jitter fraction must be used, not ignored"


def _runner(**options) -> RetryRunner:
    return RetryRunner(build_options(mode="sync", **options), Flaky, None)


def test_runner_counts_retries_sync_and_async():
    runner = _runner(num_retries=5, **FAST)
    outcomes = iter([ValueError("a"), ValueError("b"), "done"])

    def bound():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert runner.run(Call("m", (), {}), bound) == "done"
    async_outcomes = iter([ValueError("c"), "async done"])

    async def abound():
        outcome = next(async_outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert asyncio.run(runner.run_async(Call("m", (), {}), abound)) == "async done"
    assert runner.retries == 3


def test_runner_never_retries_base_exceptions():
    runner = _runner(num_retries=5, retry_on=[BaseException], **FAST)

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(Call("m", (), {}), interrupted)
    assert runner.retries == 0


def test_limits_are_released_between_attempts(mode_opts):
    ResourceLimit = concurry_ray.ResourceLimit

    class OneSlot(Worker):
        def __init__(self):
            self.attempts = 0

        def use(self) -> int:
            with self.limits.acquire(requested={"slot": 1}):
                self.attempts += 1
                if self.attempts % 2:
                    raise ConnectionError("odd attempt")
                return self.attempts

    opts = mode_opts("thread", max_workers=2, num_retries=2, limits=[ResourceLimit(key="slot", capacity=1)], **FAST)
    with OneSlot.options(**opts).init() as pool:
        assert sorted(f.result(timeout=10) % 2 for f in [pool.use() for _ in range(6)]) == [0] * 6


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_retries": -1}, "num_retries=-1 must be an integer >= 0"),
        ({"num_retries": 1.5}, "num_retries=1.5 must be an integer >= 0"),
        ({"retry_algorithm": "exponentail"}, "retry_algorithm='exponentail' is not a known RetryAlgorithm (did you mean 'Exponential'?)"),
        ({"retry_wait": -0.1}, "retry_wait=-0.1 must be >= 0"),
        ({"retry_jitter": 1.5}, "retry_jitter=1.5 must be between 0 and 1"),
        ({"retry_max_wait": -1}, "retry_max_wait=-1 must be >= 0"),
        ({"retry_on": [int]}, "is not allowed; give exception types"),
        ({"retry_on": ["ConnectionError"]}, "'ConnectionError' is not allowed"),
        ({"retry_until": 3}, "retry_until=3: 3 is not allowed"),
        ({"num_retries": {"fetch": 3}}, "needs a '*' entry"),
        ({"num_retries": {"*": 0, "fetch": -2}}, "num_retries['fetch']=-2 must be an integer >= 0"),
        ({"retry_jitter": {"*": 0.1, "fetch": 2}}, "retry_jitter['fetch']=2 must be between 0 and 1"),
    ],
)
def test_bad_retry_options_raise_config_error(options, message):
    with pytest.raises(ConfigError) as info:
        Flaky.options(**options)
    assert message in str(info.value)


def test_per_method_dicts_must_name_existing_methods():
    options = build_options(num_retries={"*": 0, "fail_time": 2})
    with pytest.raises(ConfigError, match="Flaky does not have: 'fail_time' \\(did you mean 'fail_times'\\?\\)"):
        check_method_names(options, {"fail_times", "attempts"}, "Flaky")
    check_method_names(build_options(num_retries={"*": 1, "fail_times": 2}), {"fail_times"}, "Flaky")


def test_retry_options_accept_aliases_and_normalise():
    options = build_options(retry_algorithm="FIXED", retry_on=ConnectionError, retry_until=at_least_three)
    assert options.retry_algorithm is RetryAlgorithm.Fixed
    assert options.retry_on == (ConnectionError,)
    assert options.retry_until == (at_least_three,)


def test_crash_retries_only_when_retry_on_names_worker_crashed_error():
    assert crash_retries(build_options(num_retries=3), "m") == 0
    assert crash_retries(build_options(num_retries=3, retry_on=[WorkerCrashedError]), "m") == 3
    per_method = build_options(num_retries={"*": 1, "m": 2}, retry_on={"*": [ValueError], "m": [WorkerCrashedError]})
    assert (crash_retries(per_method, "m"), crash_retries(per_method, "other")) == (2, 0)


def test_follow_crashes_resends_until_success_or_budget():
    sent = []

    def resend():
        future = CFuture()
        sent.append(future)
        return future

    first = CFuture()
    outer = follow_crashes(first, resend, retries=2)
    first.set_exception(WorkerCrashedError("worker 1 died"))
    sent[0].set_exception(WorkerCrashedError("worker 2 died"))
    sent[1].set_result("ok")
    assert outer.result(timeout=1) == "ok" and len(sent) == 2

    exhausted = follow_crashes(_failed(WorkerCrashedError("died")), lambda: _failed(WorkerCrashedError("again")), 1)
    with pytest.raises(WorkerCrashedError, match="again"):
        exhausted.result(timeout=1)
    other = follow_crashes(_failed(KeyError("user error")), resend, 5)
    with pytest.raises(KeyError):
        other.result(timeout=1)
    assert len(sent) == 2, "only crashes are re-sent"


def _failed(error: BaseException) -> CFuture:
    future = CFuture()
    future.set_exception(error)
    return future


class Suicidal(Worker):
    def die_once(self, marker: str) -> int:
        """Kills its process the first time (writing its pid to ``marker``); returns its pid after."""
        path = pathlib.Path(marker)
        if not path.exists():
            path.write_text(str(os.getpid()))
            os._exit(1)
        return os.getpid()


@pytest.mark.parametrize("mode", ["process", "ray"])
@pytest.mark.parametrize("size", [1, 2])
def test_crash_is_retried_on_another_worker(mode, size, mode_opts, tmp_path):
    marker = tmp_path / "marker"
    opts = mode_opts(mode, max_workers=size, num_retries=1, retry_on=[WorkerCrashedError])
    with Suicidal.options(**opts).init() as pool:
        pid = pool.die_once(str(marker)).result(timeout=30)
        assert pid != int(marker.read_text())
        assert pool.get_pool_stats()["load_balancer"]["crash_retries"] == 1


@pytest.mark.parametrize("mode", ALL_MODES)
def test_pool_stats_count_each_workers_retries(mode, mode_opts):
    opts = mode_opts(mode, num_retries=3, **FAST)
    with Flaky.options(**opts).init() as w:
        assert w.fail_times("a", 2).result(timeout=30) == 3
        assert w.afail_times("b", 1).result(timeout=30) == 2
        stats = w.get_pool_stats()
        assert stats["retries"] == 3
        assert [figures["retries"] for figures in stats["workers"].values()] == [3]


@pytest.mark.parametrize("mode", ["thread", "process", "ray"])
def test_pool_retry_totals_cover_every_worker_and_on_demand_workers(mode, mode_opts):
    with Flaky.options(**mode_opts(mode, max_workers=2, num_retries=3, **FAST)).init() as pool:
        gather([pool.fail_times(f"k{i}", 1) for i in range(4)], timeout=60)
        stats = pool.get_pool_stats()
        assert sorted(figures["retries"] for figures in stats["workers"].values()) == [2, 2]
        assert stats["retries"] == 4
        pool.resize(1)
        assert pool.get_pool_stats()["retries"] == 4, "a retired worker's retries still count"
    opts = mode_opts(mode, on_demand=True, max_workers=2, num_retries=3, **FAST)
    with Flaky.options(**opts).init() as pool:
        assert gather([pool.fail_times("x", 2) for _ in range(3)], timeout=60) == [3, 3, 3]
        deadline = time.monotonic() + 30
        while pool.get_pool_stats()["retries"] < 6 and time.monotonic() < deadline:
            time.sleep(0.05)  # finished on-demand workers are reaped in the background
        assert pool.get_pool_stats()["retries"] == 6
