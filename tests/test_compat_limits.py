"""concurry 0.13.2's limit names: Limit, LimitSetAcquisition, ``successful``, LimitSet config, LimitPool, float capacities."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import threading
import time
from collections import Counter

import pytest
from conftest import ALL_MODES, POOL_MODES
from test_limits_pool import most_at_once

from concurry_ray import (
    Acquisition,
    CallLimit,
    ConfigError,
    Limit,
    LimitPool,
    LimitSet,
    LimitSetAcquisition,
    LoadBalancingAlgorithm,
    RateLimit,
    RateLimitAlgorithm,
    ResourceLimit,
    Worker,
    gather,
)

REGIONS = ("us", "eu")


class Regional(Worker):
    """Takes limits from ``self.limits`` (a LimitSet or a LimitPool) and reports which set granted them."""

    def regions(self, count: int) -> list[str]:
        out = []
        for _ in range(count):
            with self.limits.acquire({"seats": 1}) as acq:
                out.append(acq.config["region"])
        return out

    async def regions_async(self, count: int) -> list[str]:
        out = []
        for _ in range(count):
            async with self.limits.acquire({"seats": 1}) as acq:
                out.append(acq.config["region"])
        return out

    def hold(self, seconds: float) -> tuple[str, float, float]:
        with self.limits.acquire({"seats": 1}) as acq:
            start = time.monotonic()
            time.sleep(seconds)
            return acq.config["region"], start, time.monotonic()

    def nested(self) -> tuple:
        """Holds a seat, takes a second one, then tries a third: what each acquisition says."""
        with self.limits.acquire({"seats": 1}) as first, self.limits.acquire({"seats": 1}) as second:
            third = self.limits.try_acquire({"seats": 1})
            with third:  # entering a refused acquisition is harmless
                pass
            third.release()
            return first.config, second.config, first.successful, bool(third), third.successful, third.config

    async def nested_async(self) -> tuple:
        async with self.limits.acquire({"seats": 1}) as first, self.limits.acquire({"seats": 1}) as second:
            third = await self.limits.try_acquire_async({"seats": 1})
            async with third:
                pass
            return first.config, second.config, bool(third)

    def config_of_one(self) -> dict:
        acq = self.limits.try_acquire({"seats": 1})
        acq.release()
        return acq.config

    def stats(self) -> dict:
        return self.limits.get_stats()


@contextlib.contextmanager
def region_sets(mode: str, capacity: int = 1, regions=REGIONS):
    """One shared LimitSet of ``seats`` per region, held where ``mode``'s workers reach it; removed after."""
    sets = [LimitSet([ResourceLimit("seats", capacity)], shared=True, mode=mode, config={"region": r}) for r in regions]
    try:
        yield sets
    finally:
        for limit_set in sets:
            limit_set.remove()


def used(limit_set: LimitSet, key: str = "seats") -> float:
    return limit_set.get_stats()["limits"][key]["used"]


# ----- names --------------------------------------------------------------------------------------
def test_limit_base_class_and_acquisition_names():
    assert all(isinstance(limit, Limit) for limit in (RateLimit("t", 1, 5), CallLimit(1, 5), ResourceLimit("r", 1)))
    assert Acquisition is LimitSetAcquisition
    limits = LimitSet([ResourceLimit("seats", 1)])
    with limits.acquire({"seats": 1}) as acq:
        assert isinstance(acq, LimitSetAcquisition)
        assert acq.successful and acq and acq.limit_set is limits
    assert acq.successful  # still granted after the release


# ----- try_acquire -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["thread", "process"])
def test_refused_try_acquire_is_falsy_and_holds_nothing(mode):
    with region_sets(mode) as (limits, _):
        held = limits.try_acquire({"seats": 1})
        refused = limits.try_acquire({"seats": 1})
        assert held.successful and held
        assert refused.successful is False and not refused
        assert "refused" in repr(refused)
        with refused:  # entering a refused acquisition takes nothing and does not raise
            refused.update(usage={"seats": 1})
        refused.release()
        assert used(limits) == 1  # only the granted one holds a seat
        held.release()
        assert used(limits) == 0
        again = limits.try_acquire({"seats": 1})
        assert again.successful
        again.release()


def test_acquire_holds_at_once_outside_an_event_loop_as_in_concurry():
    limits = LimitSet([ResourceLimit("seats", 1)])
    acq = limits.acquire({"seats": 1})
    assert acq.successful and used(limits) == 1
    acq.update(usage={"seats": 1})
    acq.release()
    assert used(limits) == 0
    with limits.acquire({"seats": 1}) as held:
        assert held.successful and used(limits) == 1
    assert used(limits) == 0


def test_inside_an_event_loop_acquire_waits_for_async_with_and_async_acquire_holds():
    limits = LimitSet([ResourceLimit("seats", 1)])

    async def main() -> None:
        pending = limits.acquire({"seats": 1})
        assert not pending.successful and used(limits) == 0
        async with pending:
            assert pending.successful and used(limits) == 1
        acq = await limits.async_acquire({"seats": 1}, timeout=5)
        assert acq.successful and used(limits) == 1
        acq.release()

    asyncio.run(main())
    assert used(limits) == 0


def test_resource_limits_not_named_take_one_unit_as_in_concurry():
    limits = LimitSet([RateLimit("tokens", 60, 100), ResourceLimit("connections", 2)])
    with limits.acquire({"tokens": 10}) as acq:
        assert acq.requested == {"tokens": 10, "connections": 1} and used(limits, "connections") == 1
    with limits.acquire({"tokens": 10, "connections": 0}):
        assert used(limits, "connections") == 0


# ----- LimitSet config ---------------------------------------------------------------------------------
def test_config_is_a_copy_on_every_acquisition():
    limits = LimitSet([ResourceLimit("seats", 2)], config={"account": "a-1", "tags": ["x"]})
    with limits.acquire({"seats": 1}) as first:
        first.config["account"] = "changed"
        with limits.acquire({"seats": 1}) as second:
            assert second.config == {"account": "a-1", "tags": ["x"]}
    assert first.config["account"] == "changed"  # the acquisition keeps its own copy
    assert limits.config == {"account": "a-1", "tags": ["x"]}
    assert LimitSet([ResourceLimit("seats", 1)]).try_acquire({"seats": 1}).config == {}
    assert limits.get_stats()["config"] == {"account": "a-1", "tags": ["x"]}


def test_config_must_be_a_dict():
    with pytest.raises(ConfigError, match=r"config='us-east' must be a dict"):
        LimitSet([ResourceLimit("seats", 1)], config="us-east")


@pytest.mark.parametrize("shared", [False, True])
def test_config_survives_pickling(shared):
    limits = LimitSet([ResourceLimit("seats", 1)], shared=shared, mode="process", config={"region": "eu"})
    copy = pickle.loads(pickle.dumps(limits))
    assert copy.config == {"region": "eu"}
    assert copy.for_worker().config == {"region": "eu"}
    limits.remove()


@pytest.mark.parametrize("mode", ALL_MODES)
def test_config_reaches_workers(mode, mode_opts):
    opts = mode_opts(mode)
    with region_sets(mode, regions=["ap"]) as (limits,):
        with Regional.options(**opts, limits=limits).init() as worker:
            assert worker.config_of_one().result(timeout=60) == {"region": "ap"}


# ----- LimitPool: choosing -----------------------------------------------------------------------------
def test_round_robin_starts_at_worker_index():
    sets = [LimitSet([ResourceLimit("seats", 9)], config={"region": r}) for r in ("a", "b", "c")]
    for index, expected in [(0, "abcab"), (1, "bcabc"), (5, "cabca")]:
        pool = LimitPool(limit_sets=sets, load_balancing="rr", worker_index=index)
        got = "".join(pool.try_acquire({"seats": 1}).config["region"] for _ in range(5))
        assert got == expected
    assert pool.load_balancing is LoadBalancingAlgorithm.RoundRobin and pool.worker_index == 5


@pytest.mark.parametrize("spelling", ["random", "RAND", LoadBalancingAlgorithm.Random])
def test_random_choice_uses_every_set(spelling):
    sets = [LimitSet([RateLimit("tokens", 60, 10_000)], config={"region": r}) for r in ("a", "b", "c")]
    pool = LimitPool(sets, load_balancing=spelling)
    counts = Counter(pool.try_acquire({"tokens": 1}).config["region"] for _ in range(300))
    assert set(counts) == {"a", "b", "c"} and min(counts.values()) > 50
    assert pool.get_stats()["load_balancing"] == "Random"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"load_balancing": "least_active"}, r"'least_active' \(LeastActiveLoad\) cannot choose a LimitSet; allowed: RoundRobin"),
        ({"load_balancing": LoadBalancingAlgorithm.LeastTotalLoad}, r"LeastTotalLoad.*allowed: RoundRobin .* or Random"),
        ({"load_balancing": "fastest"}, r"load_balancing='fastest' cannot choose a LimitSet; allowed: RoundRobin"),
        ({"worker_index": -1}, r"worker_index=-1"),
        ({"worker_index": True}, r"worker_index=True"),
    ],
)
def test_bad_pool_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LimitPool([LimitSet([ResourceLimit("seats", 1)])], **kwargs)


@pytest.mark.parametrize("sets", [[], None, "abc", [ResourceLimit("seats", 1)]])
def test_pool_needs_a_list_of_limit_sets(sets):
    with pytest.raises(ConfigError, match="limit_sets"):
        LimitPool(sets)


def test_busy_set_is_passed_over_and_all_busy_waits_on_the_chosen_set():
    with region_sets("thread") as sets:
        pool = LimitPool(sets)
        with pool.acquire({"seats": 1}) as first:  # turn 0: us
            with pool.acquire({"seats": 1}) as second:  # turn 1: eu
                pass
            with pool.acquire({"seats": 1}) as third:  # turn 2: us, busy, so eu grants
                assert (first.config, second.config, third.config) == ({"region": "us"}, {"region": "eu"}, {"region": "eu"})
                refused = pool.try_acquire({"seats": 1})  # turn 3: eu, and us, both busy
                assert not refused and refused.config == {"region": "eu"}
                start = time.monotonic()
                with pytest.raises(TimeoutError, match="seats"):
                    with pool.acquire({"seats": 1}, timeout=0.2):  # turn 4: us
                        pass
                assert 0.2 <= time.monotonic() - start < 1.0
                assert not pool.try_acquire({"seats": 1})  # turn 5
                threading.Timer(0.2, first.release).start()
                start = time.monotonic()
                with pool.acquire({"seats": 1}, timeout=5) as waited:  # turn 6: us, granted when first is released
                    assert waited.config == {"region": "us"} and time.monotonic() - start >= 0.15
        assert [s["limits"]["seats"]["used"] for s in pool.get_stats()["limit_sets"]] == [0, 0]


def test_requests_go_only_to_sets_that_could_grant_them():
    small = LimitSet([RateLimit("tokens", 60, 100)], config={"tier": "small"})
    large = LimitSet([RateLimit("tokens", 60, 1000), ResourceLimit("gpus", 1)], config={"tier": "large"})
    pool = LimitPool([small, large])
    assert {pool.try_acquire({"tokens": 500}).config["tier"] for _ in range(4)} == {"large"}
    assert {pool.try_acquire({"gpus": 1}).config["tier"], pool.try_acquire({"gpus": 1}).successful} == {"large", False}
    with pytest.raises(ConfigError, match="'tokens'=5000"):
        pool.acquire({"tokens": 5000})
    with pytest.raises(ConfigError, match="unknown limit key 'tokenz'.*did you mean 'tokens'"):
        pool.try_acquire({"tokenz": 1})
    with pytest.raises(ConfigError, match="timeout=-1"):
        pool.acquire({"tokens": 1}, timeout=-1)


def test_async_with_pool_passes_over_a_busy_set():
    with region_sets("thread") as sets:
        pool = LimitPool(sets)

        async def main():
            async with pool.acquire({"seats": 1}) as first, pool.acquire({"seats": 1}) as second:
                return first.config, second.config, bool(await pool.try_acquire_async({"seats": 1}))

        assert asyncio.run(main()) == ({"region": "us"}, {"region": "eu"}, False)


def test_no_set_exceeds_its_capacity_under_threads():
    with region_sets("thread", capacity=2, regions=("a", "b", "c")) as sets:
        pool = LimitPool(sets)
        lock = threading.Lock()
        holding, most, granted = Counter(), Counter(), Counter()

        def work():
            for _ in range(20):
                with pool.acquire({"seats": 1}, timeout=10) as acq:
                    region = acq.config["region"]
                    with lock:
                        holding[region] += 1
                        most[region] = max(most[region], holding[region])
                        granted[region] += 1
                    time.sleep(0.001)
                    with lock:
                        holding[region] -= 1

        threads = [threading.Thread(target=work) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sum(granted.values()) == 240 and set(granted) == {"a", "b", "c"}
        assert max(most.values()) <= 2
        assert all(used(s) == 0 for s in sets)


# ----- LimitPool: stats, indexing, pickling -----------------------------------------------------------
def test_stats_and_indexing():
    with region_sets("thread") as sets:
        pool = LimitPool(limit_sets=sets, worker_index=1)
        with pool.acquire({"seats": 1}):
            stats = pool.get_stats()
        assert stats["num_limit_sets"] == 2 and stats["load_balancing"] == "RoundRobin" and stats["worker_index"] == 1
        assert stats["balancer_stats"] == {"algorithm": "RoundRobin", "offset": 1, "total_dispatched": 1}
        assert [s["config"] for s in stats["limit_sets"]] == [{"region": "us"}, {"region": "eu"}]
        assert [s["limits"]["seats"]["used"] for s in stats["limit_sets"]] == [0, 1]
        assert pool[1] is sets[1] and pool[0]["seats"].capacity == 1
        with pytest.raises(TypeError, match="integers"):
            pool["seats"]
        with pytest.raises(KeyError, match="'gpus'"):
            sets[0]["gpus"]


def test_each_copy_for_a_worker_starts_one_set_further():
    with region_sets("process") as sets:
        pool = LimitPool(sets, worker_index=3)
        copies = [pickle.loads(pickle.dumps(pool)), pool.for_worker(), pickle.loads(pickle.dumps(pool))]
        assert [copy.worker_index for copy in copies] == [3, 4, 5]
        assert [copy.try_acquire({"seats": 1}).config["region"] for copy in copies[:2]] == ["eu", "us"]
        assert not copies[2].try_acquire({"seats": 1})  # the copies share the sets' budgets
        assert pool.worker_index == 3


# ----- LimitPool as a worker's limits ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ALL_MODES)
def test_worker_uses_a_limit_pool_sync_and_async(mode, mode_opts):
    opts = mode_opts(mode)
    with region_sets(mode) as sets:
        with Regional.options(**opts, limits=LimitPool(sets)).init() as worker:
            turns = worker.regions(4).result(timeout=60)  # round robin from the worker's copy's start
            a, b = turns[:2]
            assert {a, b} == set(REGIONS) and turns == [a, b, a, b]
            assert worker.regions_async(2).result(timeout=60) == [a, b]
            # turns 6, 7 granted; turn 8 (a first) refused: both held
            assert worker.nested().result(timeout=60) == ({"region": a}, {"region": b}, True, False, False, {"region": a})
            assert worker.nested_async().result(timeout=60) == ({"region": b}, {"region": a}, False)
            stats = worker.stats().result(timeout=60)
        assert stats["num_limit_sets"] == 2 and stats["balancer_stats"]["total_dispatched"] == 12
        assert [used(s) for s in sets] == [0, 0]


@pytest.mark.parametrize("mode", POOL_MODES)
def test_pool_workers_start_on_different_sets(mode, mode_opts):
    opts = mode_opts(mode, max_workers=2, load_balancing="round_robin")
    with region_sets(mode, capacity=4) as sets:
        with Regional.options(**opts, limits=LimitPool(sets)).init() as pool:
            firsts = [pool.regions(1).result(timeout=60)[0] for _ in range(2)]  # one call to each worker
    assert sorted(firsts) == ["eu", "us"]


@pytest.mark.parametrize("mode, workers", [("thread", 6), ("process", 4), ("ray", 4)])
def test_no_set_exceeds_its_capacity_across_a_pool(mode, workers, mode_opts):
    opts = mode_opts(mode, max_workers=workers)
    with region_sets(mode) as sets:
        with Regional.options(**opts, limits=LimitPool(sets)).init() as pool:
            spans = gather([pool.hold(0.05) for _ in range(4 * workers)], timeout=120)
        by_region = {region: [(lo, hi) for r, lo, hi in spans if r == region] for region in REGIONS}
        assert all(by_region.values())  # both regions served
        assert all(most_at_once(region_spans) == 1 for region_spans in by_region.values())
        assert most_at_once([(lo, hi) for _, lo, hi in spans]) == 2
        assert [used(s) for s in sets] == [0, 0]


@pytest.mark.parametrize("mode", POOL_MODES)
def test_a_list_of_limit_sets_is_a_limit_pool(mode, mode_opts):
    opts = mode_opts(mode)
    with region_sets(mode) as sets:
        with Regional.options(**opts, limits=sets).init() as worker:
            turns = worker.regions(3).result(timeout=60)
            assert set(turns) == set(REGIONS) and turns[0] == turns[2]
            assert worker.stats().result(timeout=60)["num_limit_sets"] == 2


def test_limit_pool_options_are_checked_before_anything_starts():
    with region_sets("thread") as sets:
        with pytest.raises(ConfigError, match="cannot be reached from workers in mode 'process'"):
            Regional.options(mode="process", limits=LimitPool(sets)).init()
        with pytest.raises(ConfigError, match="mixes LimitSets with other items"):
            Regional.options(mode="thread", limits=[sets[0], ResourceLimit("seats", 1)])


# ----- float capacities ----------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", list(RateLimitAlgorithm))
def test_rate_limits_take_fractional_capacities(algorithm):
    limits = LimitSet([RateLimit("tokens", 60, 2.5, algorithm=algorithm), CallLimit(60, 1.5, algorithm=algorithm)])
    assert limits["tokens"].capacity == 2.5 and limits["call_count"].capacity == 1.5
    with limits.acquire({"tokens": 2.5}, timeout=1) as acq:
        acq.update(usage={"tokens": 0.5})
    with pytest.raises(ConfigError, match="'tokens'=3.*capacity 2.5"):
        limits.acquire({"tokens": 3})


def test_capacities_concurry_refuses_are_refused():
    with pytest.raises(ConfigError, match="capacity=0.5 must be at least 1: each acquire counts one call"):
        CallLimit(window_seconds=1, capacity=0.5)
    with pytest.raises(ConfigError, match="capacity=1.5"):
        ResourceLimit("seats", 1.5)
    assert ResourceLimit("seats", 2.0).capacity == 2 and isinstance(ResourceLimit("seats", 2.0).capacity, int)
