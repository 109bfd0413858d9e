"""Elastic pools (min_workers < max_workers): grow while calls wait, shrink when idle, in every pool mode."""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
from types import SimpleNamespace

import pytest
from conftest import POOL_MODES, wait_for
from test_limits_pool import Limited
from workers import Counter

from concurry_ray import ConfigError, ResourceLimit, gather, get_pool, remove_pool
from concurry_ray.pools.autoscale import ScalingState, Step, plan
from concurry_ray.ray.scaling import RETIRE_GRACE_SECONDS, BalancerScaler

ELASTIC = {"max_workers": 3, "min_workers": 1, "idle_timeout": 0.5}


def sizes_while(pool, futures: list, seconds: float = 60) -> list[int]:
    """The pool's size, sampled every 50 ms until ``futures`` are done (at most ``seconds``)."""
    sizes, deadline = [], time.monotonic() + seconds
    while not all(f.done() for f in futures):
        assert time.monotonic() < deadline, "the calls did not finish in time"
        sizes.append(pool.get_pool_stats()["total_workers"])
        time.sleep(0.05)
    return sizes


@pytest.mark.parametrize("mode", POOL_MODES)
def test_an_elastic_pool_grows_under_load_and_shrinks_back_when_idle(mode, mode_opts):
    pool = Counter.options(**mode_opts(mode, **ELASTIC)).init()
    try:
        assert pool.get_pool_stats()["total_workers"] == 1
        calls = [pool.sleep(0.4) for _ in range(9)]
        sizes = sizes_while(pool, calls)
        assert gather(calls, timeout=60) == [0.4] * 9  # no call lost
        assert max(sizes) == 3 and min(sizes) >= 1
        wait_for(lambda: pool.get_pool_stats()["total_workers"] == 1, 20)
        stats = pool.get_pool_stats()
        assert (stats["min_workers"], stats["scaled_up"], stats["scaled_down"]) == (1, 2, 2)
        assert pool.echo("after").result(timeout=30) == "after"
    finally:
        pool.stop()


@pytest.mark.parametrize("mode", POOL_MODES)
def test_initial_workers_sets_the_starting_size_and_idle_ones_go_down_to_min(mode, mode_opts):
    pool = Counter.options(**mode_opts(mode, **ELASTIC, initial_workers=3)).init()
    try:
        assert pool.get_pool_stats()["total_workers"] == 3
        wait_for(lambda: pool.get_pool_stats()["total_workers"] == 1, 20)
        assert pool.get_pool_stats()["scaled_down"] == 2
    finally:
        pool.stop()


@pytest.mark.parametrize("mode", POOL_MODES)
def test_calls_waiting_on_a_limit_do_not_make_the_pool_grow(mode, mode_opts):
    elastic = dict(ELASTIC, max_workers=4)
    pool = Limited.options(**mode_opts(mode, **elastic, limits=[ResourceLimit("slots", 1)])).init()
    try:
        calls = [pool.hold("slots", 0.3) for _ in range(6)]
        sizes = sizes_while(pool, calls)
        spans = gather(calls, timeout=60)
        assert len(spans) == 6
        # One worker holds the slot; a second one grows for the waiting calls, then waits on the limit
        # itself, and that stops the growth: more workers would only wait too.
        assert max(sizes) == 2, sizes
    finally:
        pool.stop()


def test_a_ray_worker_that_cannot_be_placed_does_not_hold_up_the_others(mode_opts):
    # The session's Ray runtime has 2 units of "test_slot": the third worker can never be placed.
    options = mode_opts("ray", **ELASTIC)
    options["actor_options"] = {"num_cpus": 0.1, "resources": {"test_slot": 1}}
    pool = Counter.options(**options).init()
    try:
        calls = [pool.sleep(0.5) for _ in range(40)]  # 20 s of work for one worker: the pool wants 3
        wait_for(lambda: pool.get_pool_stats()["total_workers"] == 2, 60)
        assert len(set(gather(pool.broadcast("pid"), timeout=60))) == 2  # the second one serves
        assert gather(calls, timeout=60) == [0.5] * 40  # no call waited for the third
        assert pool.get_pool_stats()["total_workers"] == 2
    finally:
        pool.stop(timeout=10)


def test_a_detached_elastic_pool_keeps_scaling_after_its_creator_detached(mode_opts):
    name = f"elastic-detached-{uuid.uuid4().hex[:6]}"
    creator = Counter.options(**mode_opts("ray", name=name, lifetime="detached", **ELASTIC)).init()
    try:
        creator.stop()  # detaches this handle only: nobody manages the pool from here on
        pool = get_pool(name)
        calls = [pool.sleep(0.4) for _ in range(9)]
        sizes = sizes_while(pool, calls)
        assert gather(calls, timeout=60) == [0.4] * 9
        assert max(sizes) == 3
        wait_for(lambda: pool.get_pool_stats()["total_workers"] == 1, 20)
        stats = pool.get_pool_stats()
        assert (stats["min_workers"], stats["scaled_up"], stats["scaled_down"]) == (1, 2, 2)
        pool.stop()
    finally:
        remove_pool(name)


def test_handles_idle_while_their_ray_pool_shrank_lose_no_call(mode_opts):
    name = f"elastic-idle-{uuid.uuid4().hex[:6]}"
    pool = Counter.options(**mode_opts("ray", name=name, **ELASTIC)).init()
    observer, copy = get_pool(name), None
    try:
        calls = [pool.sleep(0.4) for _ in range(9)]
        assert max(sizes_while(observer, calls)) == 3
        gather(calls, timeout=60)
        copy = pickle.loads(pickle.dumps(pool))  # knows the three workers, as the pool's handle does
        # Only the observer reads the pool: the other two handles sit idle with their old view of
        # three workers, two of which retire and then end.
        wait_for(lambda: observer.get_pool_stats()["total_workers"] == 1, 20)
        time.sleep(RETIRE_GRACE_SECONDS + 1)
        assert gather(copy.broadcast("echo", "all"), timeout=60) == ["all"]
        assert gather([pool.echo(i) for i in range(30)], timeout=60) == list(range(30))
    finally:
        for handle in (observer, copy, pool):
            if handle is not None:
                handle.stop()


def test_scaling_state_counts_a_worker_idle_from_its_last_call():
    state = ScalingState(SimpleNamespace(pool_size=4, min_workers=1, idle_timeout=1.0))
    assert state.idle_times({0: (0, 0), 1: (1, 3)}) == pytest.approx({0: 0.0, 1: 0.0}, abs=0.05)
    time.sleep(0.2)
    idle = state.idle_times({0: (0, 0), 1: (0, 4), 2: (0, 0)})  # 1 got a call, 2 is new
    assert idle[0] == pytest.approx(0.2, abs=0.1) and idle[1] < 0.05 and idle[2] < 0.05
    time.sleep(0.2)
    idle = state.idle_times({0: (0, 0), 2: (0, 0)})  # 1 left the pool
    assert sorted(idle) == [0, 2] and idle[0] == pytest.approx(0.4, abs=0.1) and idle[2] == pytest.approx(0.2, abs=0.1)


class FakeBalancer:
    """What BalancerScaler reads from and asks of a PoolBalancer, with fixed figures."""

    def __init__(self, loads: dict, waiting: int) -> None:
        self._loads, self._waiting, self.grown = loads, waiting, 0

    def waiting(self) -> int:
        return self._waiting

    def loads(self) -> dict:
        return self._loads

    async def grow(self, count: int) -> tuple:
        self.grown += count
        return 0, {}, None

    def about(self) -> dict:
        return {"pool": "fake"}


@pytest.mark.parametrize("loads, limits, grown", [
    ({0: (1, 5)}, None, 2),                      # one busy worker, two calls waiting: two more
    ({0: (1, 5), 1: (0, 0)}, None, 1),           # a worker no call has reached yet takes one of them
    ({0: (1, 5)}, "free", 1),                    # under limits, one at a time...
    ({0: (1, 5), 1: (0, 0)}, "free", 0),         # ...and none until the last one has had a call
])
def test_the_balancer_counts_a_worker_no_call_reached_as_on_its_way(loads, limits, grown):
    async def one_tick() -> int:
        balancer = FakeBalancer(loads, waiting=2)
        scaler = BalancerScaler(balancer, OPTIONS, None if limits is None else LimitsStats(waiting=0))
        await scaler._tick()
        await asyncio.sleep(0)  # the grow tasks run
        return balancer.grown

    assert asyncio.run(one_tick()) == grown


class LimitsStats:
    """Limits whose stats say how many calls wait on them."""

    def __init__(self, waiting: int) -> None:
        self._waiting = waiting

    def get_stats(self) -> dict:
        return {"waiting": self._waiting}


OPTIONS = SimpleNamespace(pool_size=4, min_workers=1, idle_timeout=1.0)


@pytest.mark.parametrize("idle_for, starting, waiting, on_limit, step", [
    ({0: 0.0}, 0, 5, None, Step(3, [])),           # grow by the calls waiting, up to max_workers
    ({0: 0.0, 1: 0.0}, 1, 2, None, Step(1, [])),   # a worker on its way takes one of them
    ({0: 0.0}, 0, 5, True, Step(0, [])),           # they wait on a limit: more workers would not help
    ({0: 0.0}, 0, 5, False, Step(1, [])),          # a pool with limits grows one at a time...
    ({0: 0.0}, 1, 5, False, Step(0, [])),          # ...waiting for the one on its way
    ({0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}, 0, 9, None, Step(0, [])),  # at max_workers
    ({0: 5.0, 1: 0.2, 2: 3.0}, 0, 0, None, Step(0, [0, 2])),  # idle long enough, longest first
    ({0: 5.0, 1: 9.0}, 0, 0, None, Step(0, [1])),  # never below min_workers
])
def test_the_scaling_plan(idle_for, starting, waiting, on_limit, step):
    assert plan(idle_for, starting, waiting, on_limit, OPTIONS) == step


@pytest.mark.parametrize("options, message", [
    ({"mode": "thread", "max_workers": 2, "min_workers": 3}, r"min_workers=3 must be <= max_workers=2"),
    ({"mode": "thread", "max_workers": 4, "min_workers": 1, "initial_workers": 5}, r"initial_workers=5 must be between"),
    ({"mode": "thread", "max_workers": 4, "min_workers": -1}, r"min_workers=-1 must be >= 0"),
    ({"mode": "sync", "min_workers": 1}, r"apply to persistent pools"),
    ({"mode": "thread", "on_demand": True, "min_workers": 1}, r"apply to persistent pools"),
    ({"mode": "thread", "max_workers": 4, "min_workers": 1, "idle_timeout": float("nan")}, r"idle_timeout=nan must be a finite"),
    ({"mode": "thread", "max_workers": 4, "min_workers": 1, "idle_timeout": 0}, r"idle_timeout=0 must be > 0"),
])
def test_bad_elastic_options_are_refused_at_options(options, message):
    with pytest.raises(ConfigError, match=message):
        Counter.options(**options)
