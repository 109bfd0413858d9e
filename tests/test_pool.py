"""Pools: balancing, stats, on-demand workers, backpressure, priorities, resizing, lifecycle."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter as Tally

import pytest
from conftest import POOL_MODES
from workers import Stateful, Tracker

from concurry_ray import ConfigError, PoolStoppedError, WorkerCrashedError, gather


def max_overlap(intervals) -> int:
    """The largest number of (start, end) intervals open at one instant."""
    events = sorted([(s, 1) for s, e, *_ in intervals] + [(e, -1) for s, e, *_ in intervals], key=lambda x: (x[0], x[1]))
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


@pytest.mark.parametrize("mode", POOL_MODES)
def test_round_robin_cycles_like_the_guide(mode, mode_opts):
    with Stateful.options(**mode_opts(mode, max_workers=3, load_balancing="round_robin")).init(multiplier=2) as pool:
        results = [pool.process(10).result(timeout=30) for _ in range(9)]
    assert [r["result"] for r in results] == [20] * 9
    assert [r["count"] for r in results] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    workers = [(r["pid"], r["id"]) for r in results]
    assert len(set(workers[:3])) == 3 and workers[:3] == workers[3:6] == workers[6:]


@pytest.mark.parametrize("mode", POOL_MODES)
def test_least_active_sends_fast_calls_around_a_busy_worker(mode, mode_opts):
    with Stateful.options(**mode_opts(mode, max_workers=3, load_balancing="least_active")).init() as pool:
        gather(pool.broadcast("ident"), timeout=30)
        busy = pool.slow(1.5)
        time.sleep(0.1)
        fast = [pool.slow(0.01).result(timeout=30) for _ in range(6)]
        assert busy.result(timeout=30) not in fast
        stats = pool.get_pool_stats()["load_balancer"]
        assert stats["algorithm"] == "LeastActiveLoad" and stats["total_active"] == 0


@pytest.mark.parametrize("mode", POOL_MODES)
def test_least_total_evens_counts(mode, mode_opts):
    with Stateful.options(**mode_opts(mode, max_workers=3, load_balancing="total")).init() as pool:
        gather([pool.process(i) for i in range(30)], timeout=60)
        stats = pool.get_pool_stats()
    balancer = stats["load_balancer"]
    assert balancer["algorithm"] == "LeastTotalLoad"
    assert sorted(balancer["total_calls"].values()) == [10, 10, 10]
    assert balancer["total_dispatched"] == 30


@pytest.mark.parametrize("mode", POOL_MODES)
def test_random_spreads_calls(mode, mode_opts):
    with Stateful.options(**mode_opts(mode, max_workers=3, load_balancing="rand")).init() as pool:
        results = gather([pool.process(i) for i in range(90)], timeout=60)
        assert pool.get_pool_stats()["load_balancer"]["algorithm"] == "Random"
    per_worker = Tally((r["pid"], r["id"]) for r in results)
    assert len(per_worker) == 3 and min(per_worker.values()) >= 10


@pytest.mark.parametrize("mode", POOL_MODES)
def test_pool_stats_report_workers(mode, mode_opts):
    with Stateful.options(**mode_opts(mode, max_workers=2, load_balancing="active")).init() as pool:
        gather([pool.process(i) for i in range(10)], timeout=30)
        with pytest.raises(AttributeError):
            pool.nope
        stats = pool.get_pool_stats()
    assert stats["total_workers"] == 2 and stats["max_workers"] == 2
    assert stats["on_demand"] is False and stats["stopped"] is False and stats["on_demand_active"] == 0
    assert stats["load_balancer"]["total_dispatched"] == 10
    assert sum(w["completed"] for w in stats["workers"].values()) == 10
    assert all(w["alive"] and w["in_flight"] == 0 and w["failed"] == 0 for w in stats["workers"].values())


@pytest.mark.parametrize("mode", POOL_MODES)
def test_on_demand_caps_live_workers_and_never_blocks_submit(mode, mode_opts):
    with Tracker.options(**mode_opts(mode, on_demand=True, max_workers=2)).init() as pool:
        start = time.monotonic()
        futures = [pool.work(0.4, tag=i) for i in range(6)]
        assert time.monotonic() - start < 0.5, "on-demand submission blocked the caller"
        assert pool.get_pool_stats()["load_balancer"]["algorithm"] == "Random"
        results = gather(futures, timeout=120)
    assert [r[2] for r in results] == list(range(6))
    assert max_overlap(results) == 2
    if mode != "thread":
        assert len({r[3] for r in results}) == 6, "each on-demand call gets a fresh worker"


@pytest.mark.parametrize("mode", POOL_MODES)
def test_max_queued_tasks_parks_calls_and_loses_none(mode, mode_opts):
    with Tracker.options(**mode_opts(mode, max_workers=2, max_queued_tasks=1)).init() as pool:
        futures = [pool.work(0.1, tag=i) for i in range(8)]
        assert pool.get_pool_stats()["queued"] >= 5
        results = gather(futures, timeout=60)
    assert [r[2] for r in results] == list(range(8))
    assert max_overlap(results) <= 2


@pytest.mark.parametrize("mode", POOL_MODES)
def test_priority_reorders_parked_calls(mode, mode_opts):
    with Tracker.options(**mode_opts(mode, max_workers=1, max_queued_tasks=1)).init() as pool:
        blocker = pool.work(0.5, tag="blocker")
        low = [pool.work(0.01, tag=f"low{i}") for i in range(3)]
        high = pool.work.options(priority=10)(0.01, tag="high")
        results = gather([blocker, *low, high], timeout=60)
    order = [r[2] for r in sorted(results, key=lambda r: r[0])]
    assert order == ["blocker", "high", "low0", "low1", "low2"]


@pytest.mark.parametrize("mode", POOL_MODES)
def test_resize_under_load_loses_nothing(mode, mode_opts):
    with Tracker.options(**mode_opts(mode, max_workers=2)).init() as pool:
        futures = [pool.work(0.05, tag=i) for i in range(12)]
        pool.resize(3)
        assert pool.get_pool_stats()["total_workers"] == 3
        futures += [pool.work(0.05, tag=i) for i in range(12, 24)]
        pool.resize(1)
        futures += [pool.work(0.01, tag=i) for i in range(24, 30)]
        results = gather(futures, timeout=120)
        assert pool.get_pool_stats()["total_workers"] == 1
    assert [r[2] for r in results] == list(range(30))
    with Tracker.options(mode="thread", max_workers=2).init() as pool, pytest.raises(ConfigError, match="resize"):
        pool.resize(0)


@pytest.mark.parametrize("mode", POOL_MODES)
def test_broadcast_reaches_every_worker(mode, mode_opts):
    with Stateful.options(**mode_opts(mode, max_workers=3)).init() as pool:
        idents = gather(pool.broadcast("ident"), timeout=30)
        assert len(set(idents)) == 3
        with pytest.raises(AttributeError, match="did you mean 'ident'"):
            pool.broadcast("idnet")


@pytest.mark.parametrize("mode", POOL_MODES)
def test_stop_drains_then_rejects(mode, mode_opts):
    pool = Tracker.options(**mode_opts(mode, max_workers=3)).init()
    futures = [pool.work(0.05, tag=i) for i in range(9)]
    pool.stop()
    assert [f.result(timeout=0)[2] for f in futures] == list(range(9))
    assert pool.get_pool_stats()["stopped"] is True
    with pytest.raises(PoolStoppedError, match="stopped"):
        pool.work(0.1)


@pytest.mark.parametrize("mode", POOL_MODES)
def test_stop_deadline_is_for_the_whole_pool(mode, mode_opts):
    pool = Tracker.options(**mode_opts(mode, max_workers=3)).init()
    gather(pool.broadcast("work", 0), timeout=30)
    futures = [pool.work(3.0, tag=i) for i in range(6)]
    time.sleep(0.2)
    start = time.monotonic()
    pool.stop(timeout=0.5)
    assert time.monotonic() - start < 2.5
    cancelled = [f for f in futures if f.cancelled() or (f.done() and "cancel" in repr(f.exception()).lower())]
    assert len(cancelled) >= 3


@pytest.mark.parametrize("mode", POOL_MODES)
def test_closing_stops_the_pool(mode, mode_opts):
    with contextlib.closing(Stateful.options(**mode_opts(mode, max_workers=2)).init()) as pool:
        assert pool.process(1).result(timeout=30)["result"] == 2
    assert pool.get_pool_stats()["stopped"] is True


@pytest.mark.parametrize("mode", ["process", "ray"])
def test_killed_pool_worker_is_replaced_and_pool_keeps_serving(mode, mode_opts):
    with Stateful.options(**mode_opts(mode, max_workers=2)).init() as pool:
        idents = gather(pool.broadcast("ident"), timeout=30)
        running = pool.slow(30)
        time.sleep(0.3)
        os.kill(idents[0][0], signal.SIGKILL)
        with pytest.raises(WorkerCrashedError):
            running.result(timeout=10)
        results = gather([pool.process(i) for i in range(10)], timeout=60)
        assert [r["result"] for r in results] == [2 * i for i in range(10)]
        assert idents[0][0] not in {r["pid"] for r in results}
        deadline = time.monotonic() + 30
        while sum(w["restarts"] for w in pool.get_pool_stats()["workers"].values()) < 1:
            assert time.monotonic() < deadline, "the dead worker was not replaced within 30 s"
            time.sleep(0.1)
        stats = pool.get_pool_stats()
        assert sum(w["restarts"] for w in stats["workers"].values()) == 1
        assert stats["total_workers"] == 2 and all(w["alive"] for w in stats["workers"].values())
        assert len({i[0] for i in gather(pool.broadcast("ident"), timeout=30)} - {idents[0][0]}) == 2


@pytest.mark.parametrize("mode", POOL_MODES)
def test_health_check_replaces_an_unhealthy_worker(mode, mode_opts):
    options = mode_opts(mode, max_workers=1, health_check="healthy", health_check_interval=0.3)
    with Stateful.options(**options).init() as pool:
        before = pool.ident().result(timeout=30)
        pool.fall_ill().result(timeout=30)
        deadline = time.monotonic() + 30
        while pool.get_pool_stats()["health_replacements"] < 1:
            assert time.monotonic() < deadline, "the unhealthy worker was not replaced"
            time.sleep(0.1)
        assert pool.ident().result(timeout=30) != before
        assert pool.healthy().result(timeout=30) is True
        assert pool.get_pool_stats()["total_workers"] == 1


def test_health_check_must_name_a_method():
    with pytest.raises(ConfigError, match="health_check='helthy' is not a public method of Stateful .did you mean 'healthy'"):
        Stateful.options(mode="thread", health_check="helthy").init()
