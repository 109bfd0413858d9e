"""Named Ray pools: readable actor names, get-or-create, get_pool from anywhere, detached lifetime, remove_pool."""

from __future__ import annotations

import pytest
import ray
from conftest import RAY_ACTOR, wait_for
from workers import Counter

from concurry_ray import (
    ConfigError,
    PoolNotFoundError,
    PoolStoppedError,
    ResourceLimit,
    WorkerCrashedError,
    gather,
    get_pool,
    remove_pool,
)
from concurry_ray.ray.naming import NAMESPACE


def actor_names() -> set[str]:
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE}


def named(name: str, **extra):
    return Counter.options(mode="ray", name=name, max_workers=2, actor_options=RAY_ACTOR, **extra)


@pytest.fixture
def cleanup(ray_runtime):
    """Pools a test names; any still there at the end are removed."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            remove_pool(name, timeout=5)
        except PoolNotFoundError:
            pass


def test_a_pool_and_its_workers_have_readable_actor_names(ray_runtime):
    pool = Counter.options(mode="ray", max_workers=2, actor_options=RAY_ACTOR).init()
    try:
        balancers = [n for n in actor_names() if n.startswith("Counter-") and n.endswith("/balancer")]
        prefix = next(n[: -len("/balancer")] for n in balancers if f"{n[: -len('/balancer')]}/w1" in actor_names())
        assert {f"{prefix}/w0", f"{prefix}/w1"} <= actor_names()
    finally:
        pool.stop()
    wait_for(lambda: not {f"{prefix}/balancer", f"{prefix}/w0"} & actor_names(), 30)


def test_a_second_init_with_the_same_name_attaches_to_the_same_workers(cleanup):
    cleanup.append("np-same")
    first = named("np-same").init()
    second = named("np-same").init()
    assert sorted(gather(first.broadcast("pid"), timeout=60)) == sorted(gather(second.broadcast("pid"), timeout=60))
    gather([first.echo(i) for i in range(3)] + [second.echo(i) for i in range(4)], timeout=60)
    second.stop()  # detaches that handle only
    assert first.echo("still").result(timeout=30) == "still"
    wait_for(lambda: sum(w["completed"] for w in first.get_pool_stats()["workers"].values()) >= 11, 30)
    first.stop()  # the creating handle of a pool that is not detached ends it
    wait_for(lambda: "np-same/balancer" not in actor_names(), 30)


def test_a_different_definition_under_the_same_name_is_refused_showing_both(cleanup):
    cleanup.append("np-differs")
    first = named("np-differs").init()
    try:
        with pytest.raises(ConfigError, match=r"(?s)'np-differs' exists with another definition.*existing: .*'max_workers': '2'.*yours: .*'max_workers': '3'"):
            Counter.options(mode="ray", name="np-differs", max_workers=3, actor_options=RAY_ACTOR).init()
        assert first.echo(1).result(timeout=30) == 1  # the existing pool is untouched
    finally:
        first.stop()


def test_get_pool_attaches_without_the_class_and_from_a_ray_task(cleanup):
    cleanup.append("np-found")
    pool = named("np-found").init(start=10)
    try:
        found = get_pool("np-found")
        assert found.incr().result(timeout=30) in (11, 12)

        @ray.remote(num_cpus=0.1)
        def from_a_task() -> int:
            from concurry_ray import get_pool as attach

            handle = attach("np-found")
            value = handle.pid().result(timeout=30)
            handle.stop()
            return value

        assert ray.get(from_a_task.remote(), timeout=60) in gather(pool.broadcast("pid"), timeout=60)
        found.stop()
        assert pool.echo("ok").result(timeout=30) == "ok"
    finally:
        pool.stop()


def test_an_unknown_pool_name_is_pool_not_found_listing_the_pools(cleanup):
    cleanup.append("np-listed")
    pool = named("np-listed").init()
    try:
        with pytest.raises(PoolNotFoundError, match=r"no Ray pool named 'np-nope'.*'np-listed'"):
            get_pool("np-nope")
        with pytest.raises(PoolNotFoundError):
            remove_pool("np-nope")
    finally:
        pool.stop()


def test_a_detached_pool_outlives_its_handles_until_removed(cleanup):
    cleanup.append("np-detached")
    creator = named("np-detached", lifetime="detached").init()
    pids = sorted(gather(creator.broadcast("pid"), timeout=60))
    creator.echo(1).result(timeout=30)
    creator.stop()  # detaches; the pool stays
    later = get_pool("np-detached")
    assert sorted(gather(later.broadcast("pid"), timeout=60)) == pids
    assert later.echo(2).result(timeout=30) == 2
    assert remove_pool("np-detached", timeout=10) == 0  # idle workers exit at once: none killed
    assert not {"np-detached/balancer", "np-detached/w0", "np-detached/w1"} & actor_names()
    with pytest.raises((PoolStoppedError, WorkerCrashedError)):  # its worker is gone, and then the pool
        later.echo(3).result(timeout=30)
    later.stop()


def test_a_named_pools_limits_are_held_under_its_name_and_end_with_the_pool(cleanup):
    cleanup.append("np-limited")
    limits = [ResourceLimit(key="slots", capacity=2)]
    creator = named("np-limited", limits=limits).init()
    second = named("np-limited", limits=limits).init()  # attaches to the same pool and the same budget
    assert "np-limited/limits" in actor_names()
    assert second.slots_in_use().result(timeout=30) == 1
    second.stop()  # detaches: the budget stays for the creator's workers
    assert creator.slots_in_use().result(timeout=30) == 1
    creator.stop()
    wait_for(lambda: "np-limited/limits" not in actor_names(), 30)


def test_a_detached_pools_limits_stay_when_its_creator_stops_and_go_with_remove_pool(cleanup):
    cleanup.append("np-detached-limited")
    creator = named("np-detached-limited", lifetime="detached", limits=[ResourceLimit(key="slots", capacity=2)]).init()
    creator.stop()
    later = get_pool("np-detached-limited")
    assert later.slots_in_use().result(timeout=30) == 1
    later.stop()
    remove_pool("np-detached-limited", timeout=10)
    assert not {n for n in actor_names() if n.startswith("np-detached-limited/")}


def test_remove_pool_lets_running_calls_finish(cleanup):
    cleanup.append("np-drained")
    pool = named("np-drained", lifetime="detached").init()
    running = pool.sleep(1.0)
    assert remove_pool("np-drained", timeout=20) == 0
    assert running.result(timeout=5) == 1.0
    pool.stop()


@pytest.mark.parametrize("options, message", [
    ({"mode": "ray", "lifetime": "detached"}, r"lifetime='detached' needs a name="),
    ({"mode": "thread", "name": "t", "lifetime": "detached"}, r"only mode 'ray' pools can outlive"),
    ({"mode": "ray", "name": "x", "lifetime": "forever"}, r"lifetime='forever' is not one of"),
    ({"mode": "ray", "name": ""}, r"name='' must be a non-empty string"),
])
def test_bad_names_and_lifetimes_are_refused_at_options(options, message):
    with pytest.raises(ConfigError, match=message):
        Counter.options(**options)
