"""Ray mode: the holder is a named detached actor; dead workers and a restarted holder never break the limit."""

from __future__ import annotations

import time

import pytest
from test_limits_pool import Limited, most_at_once

from concurry_ray import ConfigError, LimitSet, RateLimit, ResourceLimit, gather
from concurry_ray.ray.limits_holder import NAMESPACE, RESTART_GRACE, list_holders


@pytest.fixture
def ray(ray_runtime):
    """The session's Ray runtime; fails the test if it leaves a limits holder behind."""
    before = set(list_holders())
    yield ray_runtime
    left = set(list_holders()) - before
    for name in left:
        ray_runtime.kill(ray_runtime.get_actor(name, namespace=NAMESPACE), no_restart=True)
    assert not left, f"test left limits holders behind: {left}"


def test_pool_holder_is_a_detached_actor_removed_when_the_pool_stops(ray, mode_opts):
    pool = Limited.options(**mode_opts("ray", max_workers=2, limits=[ResourceLimit("slots", 1)])).init()
    made = set(list_holders())
    assert len(made) == 1
    assert pool.stats().result(timeout=30)["mode"] == "ray"
    pool.stop()
    assert not set(list_holders()) & made


def test_named_set_is_shared_and_a_different_definition_is_refused(ray, mode_opts):
    first = LimitSet([ResourceLimit("slots", 1)], shared=True, mode="ray", name="test-ray-named")
    second = LimitSet([ResourceLimit("slots", 1)], shared=True, mode="ray", name="test-ray-named")
    try:
        with first.acquire({"slots": 1}):
            assert not second.try_acquire({"slots": 1}).successful
        with pytest.raises(ConfigError, match=r"existing: .*'capacity': 1(.|\n)*yours: .*'capacity': 3"):
            LimitSet([ResourceLimit("slots", 3)], shared=True, mode="ray", name="test-ray-named")
        pools = [Limited.options(**mode_opts("ray", max_workers=2, limits=first)).init() for _ in range(2)]
        spans = gather([p.hold("slots", 0.05) for p in pools for _ in range(2)], timeout=60)
        for p in pools:
            p.stop()
        assert most_at_once(spans) == 1
        assert "test-ray-named" in list_holders()  # named: it outlives the pools
    finally:
        first.remove()
    assert "test-ray-named" not in list_holders()


def test_restarted_holder_starts_conservatively_and_keeps_held_slots(ray):
    limits = LimitSet([ResourceLimit("slots", 1), RateLimit("tokens", 60, 100)], shared=True, mode="ray", name="test-restart")
    try:
        held = limits.acquire({"slots": 1}).__enter__()
        restart_holder(ray, "test-restart")
        assert not limits.try_acquire({"tokens": 1}).successful  # rates restart used up
        time.sleep(RESTART_GRACE + 0.2)
        assert not limits.try_acquire({"slots": 1}).successful  # the held slot was reported to the new holder
        held.release()
        with limits.acquire({"slots": 1}, timeout=5):
            assert limits.get_stats()["limits"]["slots"]["used"] == 1
    finally:
        limits.remove()


def restart_holder(ray, name: str) -> None:
    """Kill the holder actor so that Ray restarts it, and wait until the new one answers."""
    actor = ray.get_actor(name, namespace=NAMESPACE)
    before = ray.get(actor.locator.remote())
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + 30
    while ray.get(actor.locator.remote(), timeout=30) == before:
        assert time.monotonic() < deadline, "the holder was not restarted"
        time.sleep(0.05)
