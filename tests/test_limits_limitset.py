"""LimitSet semantics in one process: models, acquire/update/release, errors, fairness, sharing."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time

import pytest

from concurry_ray import CallLimit, ConfigError, LimitSet, RateLimit, ResourceLimit, Worker
from concurry_ray.enums import RateLimitAlgorithm
from concurry_ray.limits import empty_limits, pool_limits


def used(limits: LimitSet, key: str) -> float:
    return limits.get_stats()["limits"][key]["used"]


# ----- models ------------------------------------------------------------------------
def test_models_accept_window_alias_names_and_positional_fields():
    assert CallLimit(window="minute", capacity=100).window_seconds == 60
    assert RateLimit("tokens", "hour", 1000, "gcra").model_dump() == {
        "key": "tokens", "capacity": 1000, "window_seconds": 3600, "algorithm": RateLimitAlgorithm.GCRA,
    }
    assert RateLimit(key="t", window_seconds=2, capacity=5).algorithm is RateLimitAlgorithm.SlidingWindow
    assert ResourceLimit("connections", 5).capacity == 5
    assert CallLimit(1, 10).key == "call_count"


@pytest.mark.parametrize(
    "build, named",
    [
        (lambda: CallLimit(window_seconds=1, capacity=0), "capacity=0"),
        (lambda: RateLimit("t", 1, float("inf")), "capacity=inf"),
        (lambda: RateLimit("t", "fortnight", 5), "'fortnight'"),
        (lambda: RateLimit("t", -3, 5), "window_seconds=-3"),
        (lambda: RateLimit("t", 1, 5, algorithm="tokenbuckett"), "'tokenbuckett'"),
        (lambda: ResourceLimit("c", 2.5), "capacity=2.5"),
        (lambda: LimitSet([CallLimit(1, 1), CallLimit(2, 2)]), "'call_count' is used twice"),
        (lambda: LimitSet([RateLimit("t", 1, 1), ResourceLimit("t", 1)]), "'t' is used twice"),
        (lambda: LimitSet(["tokens"]), "'tokens'"),
    ],
)
def test_bad_limits_raise_config_error_naming_the_value(build, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        build()


# ----- acquiring -----------------------------------------------------------------------
def test_usage_equals_request_without_update_and_update_refunds():
    limits = LimitSet([RateLimit("tokens", 60, 1000)])
    with limits.acquire(requested={"tokens": 100}):
        pass
    assert used(limits, "tokens") == 100
    with limits.acquire(requested={"tokens": 100}) as acq:
        acq.update(usage={"tokens": 30})
    assert used(limits, "tokens") == 130


def test_exception_inside_block_propagates_unchanged_and_releases_everything():
    limits = LimitSet([ResourceLimit("connections", 1), RateLimit("tokens", 60, 100)])
    error = KeyError("boom")
    with pytest.raises(KeyError) as caught:
        with limits.acquire(requested={"connections": 1, "tokens": 10}):
            raise error
    assert caught.value is error
    assert used(limits, "connections") == 0
    assert limits.try_acquire({"connections": 1}).successful


def test_unknown_keys_and_requests_over_capacity_raise_at_once_naming_the_key():
    limits = LimitSet([RateLimit("tokens", 60, 1000), ResourceLimit("connections", 2)])
    with pytest.raises(ConfigError, match="'tokenz'.*did you mean 'tokens'"):
        limits.acquire(requested={"tokenz": 1})
    with pytest.raises(ConfigError, match="'connections'=3.*capacity 2"):
        limits.acquire(requested={"connections": 3})
    with pytest.raises(ConfigError, match="'tokens'=-1"):
        limits.acquire(requested={"tokens": -1})
    with pytest.raises(ConfigError, match="'x'.*no limits"):
        empty_limits().acquire(requested={"x": 1})


def test_update_rejects_keys_not_requested_and_usage_above_request():
    limits = LimitSet([RateLimit("tokens", 60, 1000), RateLimit("images", 60, 10)])
    with limits.acquire(requested={"tokens": 100}) as acq:
        with pytest.raises(ConfigError, match="'images'.*not requested"):
            acq.update(usage={"images": 1})
        with pytest.raises(ConfigError, match="'tokens'=150"):
            acq.update(usage={"tokens": 150})
    assert used(limits, "tokens") == 100


def test_call_limit_counts_one_call_per_acquire():
    limits = LimitSet([CallLimit(60, 3), RateLimit("tokens", 60, 1000)])
    for _ in range(2):
        with limits.acquire(requested={"tokens": 10}) as acq:
            assert acq.requested == {"tokens": 10, "call_count": 1}
    with limits.acquire():
        pass
    assert used(limits, "call_count") == 3
    assert not limits.try_acquire().successful
    with pytest.raises(ConfigError, match="exactly one call"):
        limits.acquire(requested={"call_count": 2})


def test_try_acquire_does_not_wait_and_its_acquisition_releases_on_exit():
    limits = LimitSet([ResourceLimit("seats", 1)])
    held = limits.try_acquire({"seats": 1})
    assert held.successful and held
    assert not limits.try_acquire({"seats": 1}).successful
    with held:
        pass
    assert used(limits, "seats") == 0


def test_timeout_raises_timeout_error_and_leaves_nothing_waiting():
    limits = LimitSet([ResourceLimit("seats", 1)], shared=True)
    with limits.acquire({"seats": 1}):
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="seats"):
            with limits.acquire({"seats": 1}, timeout=0.1):
                pass
        assert 0.1 <= time.monotonic() - start < 1.0
        assert limits.get_stats()["waiting"] == 0
    assert used(limits, "seats") == 0


def test_rate_waiter_is_woken_when_the_window_allows_not_by_polling():
    limits = LimitSet([CallLimit(window_seconds=0.3, capacity=1)], shared=True)
    with limits.acquire():
        pass
    start = time.monotonic()
    with limits.acquire(timeout=5):
        waited = time.monotonic() - start
    assert 0.29 <= waited < 0.36


def test_waiting_is_first_come_first_served_per_key():
    limits = LimitSet([ResourceLimit("slots", 3), ResourceLimit("other", 1)], shared=True)
    order = []

    def take(name: str, amount: int) -> None:
        with limits.acquire({"slots": amount, "other": 0}, timeout=10):
            order.append(name)
            time.sleep(0.05)

    first = limits.try_acquire({"slots": 2, "other": 0})
    big = threading.Thread(target=take, args=("big", 3))
    big.start()
    _wait_for(lambda: limits.get_stats()["waiting"] == 1)
    small = threading.Thread(target=take, args=("small", 1))
    small.start()  # one slot is free, but "big" asked first
    _wait_for(lambda: limits.get_stats()["waiting"] == 2)
    with limits.acquire({"other": 1, "slots": 0}, timeout=1):  # a request on other keys is not held up
        pass
    first.release()
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]


def test_async_with_waits_without_blocking_the_event_loop():
    limits = LimitSet([ResourceLimit("seats", 2)], shared=True)
    inside, peak, ticks = [0], [0], [0]

    async def job() -> None:
        async with limits.acquire({"seats": 1}, timeout=10):
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            await asyncio.sleep(0.05)
            inside[0] -= 1

    async def ticker() -> None:
        for _ in range(10):
            ticks[0] += 1
            await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(ticker(), *(job() for _ in range(8)))

    asyncio.run(main())
    assert peak[0] == 2
    assert ticks[0] == 10
    assert used(limits, "seats") == 0


def test_async_timeout_raises_and_cancellation_leaves_nothing_held():
    limits = LimitSet([ResourceLimit("seats", 1)], shared=True)

    async def main() -> None:
        async with limits.acquire({"seats": 1}):
            with pytest.raises(TimeoutError):
                async with limits.acquire({"seats": 1}, timeout=0.05):
                    pass
            task = asyncio.ensure_future(limits.acquire({"seats": 1}).__aenter__())
            await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert used(limits, "seats") == 0
    assert limits.get_stats()["waiting"] == 0


def test_stats_show_usage_per_key():
    limits = LimitSet([CallLimit(60, 10), ResourceLimit("connections", 5)], shared=True, mode="thread")
    with limits.acquire({"connections": 2}):
        stats = limits.get_stats()
    assert stats["mode"] == "thread" and stats["shared"] is True
    assert stats["limits"]["connections"] == {"kind": "resource", "capacity": 5, "used": 2, "available": 3, "waiting": 0}
    assert stats["limits"]["call_count"]["used"] == 1
    assert stats["limits"]["call_count"]["algorithm"] is RateLimitAlgorithm.SlidingWindow


# ----- sharing and pickling ----------------------------------------------------------------
def test_private_set_pickles_into_a_fresh_budget():
    limits = LimitSet([ResourceLimit("seats", 1)])
    with limits.acquire({"seats": 1}):
        copy = pickle.loads(pickle.dumps(limits))
        assert copy.try_acquire({"seats": 1}).successful
    assert limits.for_worker() is not limits


def test_shared_thread_set_refuses_to_leave_its_process():
    limits = LimitSet([ResourceLimit("seats", 1)], shared=True, mode="thread")
    with pytest.raises(TypeError, match="mode='process' or mode='ray'"):
        pickle.dumps(limits)
    assert limits.for_worker() is limits


def test_process_set_unpickled_in_its_own_process_shares_the_budget():
    limits = LimitSet([ResourceLimit("seats", 1)], shared=True, mode="process")
    copy = pickle.loads(pickle.dumps(limits))
    with limits.acquire({"seats": 1}):
        assert not copy.try_acquire({"seats": 1}).successful
    assert copy.try_acquire({"seats": 1}).successful
    limits.remove()


def test_named_sets_share_a_budget_and_reject_a_different_definition():
    first = LimitSet([ResourceLimit("seats", 1)], shared=True, name="test-named-seats")
    second = LimitSet([ResourceLimit("seats", 1)], shared=True, name="test-named-seats")
    with first.acquire({"seats": 1}):
        assert not second.try_acquire({"seats": 1}).successful
    with pytest.raises(ConfigError, match=r"'test-named-seats'(.|\n)*capacity': 1(.|\n)*capacity': 2"):
        LimitSet([ResourceLimit("seats", 2)], shared=True, name="test-named-seats")
    with pytest.raises(ConfigError, match="shared=True"):
        LimitSet([ResourceLimit("seats", 2)], name="private-name")


def test_pool_limits_builds_one_owned_set_or_uses_a_given_one():
    assert pool_limits(None, "thread") is None
    built = pool_limits([CallLimit(1, 10)], "thread")
    assert built.shared and built._owned
    given = LimitSet([CallLimit(1, 10)], shared=True, mode="process")
    assert pool_limits(given, "thread") is given and not given._owned
    given.remove()
    with pytest.raises(ConfigError, match="cannot be reached from workers in mode 'process'"):
        pool_limits(LimitSet([CallLimit(1, 10)], shared=True, mode="thread"), "process")
    for bad in ("tokens", CallLimit(1, 10), 5):
        with pytest.raises(ConfigError, match="limits="):
            pool_limits(bad, "thread")
        with pytest.raises(ConfigError, match="limits="):
            Worker.options(limits=bad)  # rejected with the other options, before anything starts


def test_uncontended_thread_acquire_release_takes_microseconds():
    limits = LimitSet([ResourceLimit("seats", 2), RateLimit("tokens", 1, 1e12)], shared=True)
    rounds = 20000
    start = time.perf_counter()
    for _ in range(rounds):
        with limits.acquire({"seats": 1, "tokens": 1}):
            pass
    per_op = (time.perf_counter() - start) / rounds
    assert per_op < 50e-6  # ~5 us here; generous for a loaded 2-core machine


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)
