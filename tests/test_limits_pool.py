"""Limits shared by pools in every mode: rates and concurrency under load, the guide's examples, failures."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from conftest import ALL_MODES, POOL_MODES
from morphic import validate

from concurry_ray import CallLimit, LimitSet, RateLimit, ResourceLimit, Worker, gather

WORKERS = {"thread": 8, "process": 4, "ray": 4}


class Limited(Worker):
    """Methods that take limits the way user code does, and report when they held them."""

    def call(self) -> tuple[float, float]:
        before = time.monotonic()
        with self.limits.acquire():
            return before, time.monotonic()

    def hold(self, key: str, seconds: float) -> tuple[float, float]:
        with self.limits.acquire(requested={key: 1}):
            start = time.monotonic()
            time.sleep(seconds)
            return start, time.monotonic()

    async def hold_async(self, key: str, seconds: float) -> tuple[float, float]:
        async with self.limits.acquire(requested={key: 1}):
            start = time.monotonic()
            await asyncio.sleep(seconds)
            return start, time.monotonic()

    def spend(self, tokens: int, used: int | None = None) -> None:
        with self.limits.acquire(requested={"tokens": tokens}) as acq:
            if used is not None:
                acq.update(usage={"tokens": used})

    def fail_inside(self, key: str) -> None:
        with self.limits.acquire(requested={key: 1}):
            raise KeyError("failed while holding a slot")

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> dict:
        return self.limits.get_stats()


def most_in_any_window(spans: list[tuple[float, float]], window: float) -> int:
    """The most acquisitions certainly granted inside one window.

    Each span runs from just before ``acquire`` to just after it returned, so the
    grant happened inside it; a span wholly within [s, s + window) was granted there.
    """
    return max(sum(1 for lo, hi in spans if start <= lo and hi < start + window) for start, _ in spans)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    return max(sum(1 for lo, hi in spans if lo <= t < hi) for t, _ in spans)


# ----- under load ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", POOL_MODES)
def test_call_limit_holds_across_the_pool_and_is_used_fully(mode, mode_opts):
    opts = mode_opts(mode, max_workers=WORKERS[mode], limits=[CallLimit(window_seconds=1, capacity=50)])
    with Limited.options(**opts).init() as pool:
        pool.pid().result(timeout=30)
        spans = gather([pool.call() for _ in range(200)], timeout=60)
    start = min(lo for lo, _ in spans)
    assert most_in_any_window(spans, 1.0) <= 50
    granted_in_3s = sum(1 for _, hi in spans if hi < start + 3.0)
    assert granted_in_3s >= 0.9 * 150  # the sliding window allows 150 in [start, start + 3)


@pytest.mark.parametrize("mode, workers", [("thread", 20), ("process", 4), ("ray", 4)])
def test_resource_limit_caps_concurrency(mode, workers, mode_opts):
    opts = mode_opts(mode, max_workers=workers, limits=[ResourceLimit(key="slots", capacity=2)])
    with Limited.options(**opts).init() as pool:
        spans = gather([pool.hold("slots", 0.05) for _ in range(3 * workers)], timeout=60)
        assert pool.stats().result(timeout=30)["limits"]["slots"]["used"] == 0
    assert most_at_once(spans) == 2


@pytest.mark.parametrize("mode", ["asyncio", "thread", "ray"])
def test_async_methods_share_a_resource_limit(mode, mode_opts):
    opts = mode_opts(mode, limits=[ResourceLimit(key="slots", capacity=2)])
    with Limited.options(**opts).init() as worker:
        spans = gather([worker.hold_async("slots", 0.05) for _ in range(8)], timeout=60)
    assert most_at_once(spans) == 2


@pytest.mark.parametrize("mode", ALL_MODES)
def test_exception_and_missing_update_leave_no_slot_held(mode, mode_opts):
    opts = mode_opts(mode, limits=[ResourceLimit("slots", 1), RateLimit("tokens", 60, 1000)])
    with Limited.options(**opts).init() as worker:
        with pytest.raises(KeyError, match="failed while holding a slot"):
            worker.fail_inside("slots").result(timeout=30)
        worker.spend(100).result(timeout=30)
        worker.spend(100, used=40).result(timeout=30)
        worker.hold("slots", 0).result(timeout=5)  # the slot came back
        stats = worker.stats().result(timeout=30)["limits"]
    assert stats["slots"]["used"] == 0
    assert stats["tokens"]["used"] == 140


# ----- sharing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", POOL_MODES)
def test_one_limit_set_shared_by_two_pools(mode, mode_opts):
    shared = LimitSet([ResourceLimit("slots", 1)], shared=True, mode=mode)
    first = Limited.options(**mode_opts(mode, max_workers=2, limits=shared)).init()
    second = Limited.options(**mode_opts(mode, max_workers=2, limits=shared)).init()
    try:
        spans = gather([pool.hold("slots", 0.05) for pool in (first, second) for _ in range(3)], timeout=60)
    finally:
        first.stop()
        second.stop()
    assert most_at_once(spans) == 1
    assert shared.get_stats()["limits"]["slots"]["used"] == 0  # still there: the pools did not own it
    shared.remove()


@pytest.mark.parametrize("mode", ["thread", "process", "ray"])
def test_private_set_gives_each_worker_its_own_budget(mode, mode_opts):
    private = LimitSet([ResourceLimit("slots", 1)])
    with Limited.options(**mode_opts(mode, max_workers=2, limits=private)).init() as pool:
        spans = gather([pool.hold("slots", 0.2) for _ in range(2)], timeout=60)
    assert most_at_once(spans) == 2


def test_on_demand_workers_share_the_pool_budget(mode_opts):
    opts = mode_opts("thread", on_demand=True, max_workers=6, limits=[ResourceLimit("slots", 2)])
    with Limited.options(**opts).init() as pool:
        spans = gather([pool.hold("slots", 0.05) for _ in range(12)], timeout=60)
    assert most_at_once(spans) == 2


# ----- a worker that dies -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["process", "ray"])
def test_worker_killed_while_holding_a_slot_releases_it(mode, mode_opts):
    limits = LimitSet([ResourceLimit("slots", 1)], shared=True, mode=mode)
    with Limited.options(**mode_opts(mode, max_workers=2, limits=limits)).init() as pool:
        gather([pool.pid() for _ in range(2)], timeout=30)
        pool.hold("slots", 60)
        busy = busy_worker_once_held(pool, limits)
        pool._dispatcher.slot(busy).client.kill()
        start = time.monotonic()
        pool.hold("slots", 0).result(timeout=10)
        assert time.monotonic() - start < 3  # released when its connection closed, not after a lease ran out
    limits.remove()


def busy_worker_once_held(pool, limits: LimitSet) -> int:
    """Wait until the one call in flight holds the slot; the index of its worker."""
    deadline = time.monotonic() + 10
    while limits.get_stats()["limits"]["slots"]["used"] < 1:
        assert time.monotonic() < deadline, "the slot was never taken"
        time.sleep(0.01)
    busy = [i for i, s in pool.get_pool_stats()["workers"].items() if s["in_flight"]]
    assert len(busy) == 1
    return busy[0]


# ----- the guide's examples ------------------------------------------------------------------------
class APIWorker(Worker):
    """The guide's shared rate limiting example (windows shortened to seconds)."""

    def __init__(self, api_key: str):
        self.api_key = api_key

    def call_api(self, prompt: str) -> str:
        with self.limits.acquire(requested={"tokens": 100}):
            return f"{self.api_key}: {prompt}"


class ValidatedAPIWorker(Worker):
    """The guide's "shared limits with validated workers" example."""

    @validate
    def __init__(self, api_key: str):
        self.api_key = api_key

    @validate
    def call_api(self, endpoint: str, tokens: int = 100) -> dict:
        with self.limits.acquire(requested={"tokens": tokens}) as acq:
            response = {"endpoint": endpoint, "tokens": tokens}
            acq.update(usage={"tokens": tokens})
            return response


class DatabaseWorker(Worker):
    """The guide's resource pooling example, recording when each query ran."""

    def __init__(self, db_config: dict):
        self.db_config = db_config

    def query(self, sql: str) -> tuple[float, float]:
        with self.limits.acquire(requested={"connections": 1}):
            start = time.monotonic()
            time.sleep(0.05)
            return start, time.monotonic()


@pytest.mark.parametrize("mode", POOL_MODES)
def test_guide_api_worker_shares_call_and_token_budgets(mode, mode_opts):
    limits = [CallLimit(window_seconds=1, capacity=100), RateLimit(key="tokens", window_seconds=1, capacity=1000)]
    pool = APIWorker.options(**mode_opts(mode, max_workers=WORKERS[mode], limits=limits)).init(api_key="my-key")
    start = time.monotonic()
    results = [f.result(timeout=60) for f in [pool.call_api(f"Request {i}") for i in range(25)]]
    elapsed = time.monotonic() - start
    pool.stop()
    assert results[3] == "my-key: Request 3"
    assert 2.0 <= elapsed < 6  # 10 calls of 100 tokens per second: 25 calls need two refills


def test_guide_validated_api_worker(mode_opts):
    opts = mode_opts("thread", max_workers=10, limits=[RateLimit(key="tokens", window_seconds=1, capacity=1000)])
    pool = ValidatedAPIWorker.options(**opts).init(api_key="my-key")
    start = time.monotonic()
    results = [f.result(timeout=30) for f in [pool.call_api("/users", tokens=100) for _ in range(20)]]
    elapsed = time.monotonic() - start
    pool.stop()
    assert results[0] == {"endpoint": "/users", "tokens": 100}
    assert 1.0 <= elapsed < 3  # only 10 complete at once, the rest wait for the window


@pytest.mark.parametrize("mode, workers", [("thread", 20), ("process", 4), ("ray", 4)])
def test_guide_database_worker_runs_at_most_five_queries_at_once(mode, workers, mode_opts):
    opts = mode_opts(mode, max_workers=workers, limits=[ResourceLimit(key="connections", capacity=min(5, workers - 1))])
    with DatabaseWorker.options(**opts).init(db_config={"dsn": "memory"}) as pool:
        spans = gather([pool.query("SELECT 1") for _ in range(3 * workers)], timeout=60)
    assert most_at_once(spans) == min(5, workers - 1)
