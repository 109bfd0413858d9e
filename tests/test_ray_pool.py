"""Ray pools are Ray-native: the handle travels, the balancer is an actor, nested pools work."""

from __future__ import annotations

import pathlib
import pickle
import subprocess
import sys
import textwrap
import time

import pytest
import ray
from conftest import RAY_ACTOR, actor_gone, wait_for
from workers import Branch, Caller, Leaf, Visitor

from concurry_ray import gather
from concurry_ray.ray import membership as ray_membership


@pytest.fixture
def leaf_pool(ray_runtime):
    pool = Leaf.options(mode="ray", max_workers=2, load_balancing="total", actor_options=RAY_ACTOR).init()
    yield pool
    pool.stop()


def test_pool_handle_passed_to_a_ray_task_dispatches_into_the_same_pool(leaf_pool):
    @ray.remote(num_cpus=0.1)
    def use(pool, values):
        results = [pool.work(v).result() for v in values]
        return results, pool.get_pool_stats()["load_balancer"]["total_dispatched"]

    assert gather([leaf_pool.work(i) for i in range(4)], timeout=30) == [0, 2, 4, 6]
    results, seen_inside = ray.get(use.remote(leaf_pool, list(range(10))), timeout=60)
    assert results == [2 * v for v in range(10)]
    assert seen_inside == 14
    wait_for(lambda: leaf_pool.get_pool_stats()["load_balancer"]["total_dispatched"] == 14)
    stats = leaf_pool.get_pool_stats()
    assert sum(stats["load_balancer"]["total_calls"].values()) == 14
    assert sum(w["completed"] for w in stats["workers"].values()) == 14


def test_pool_handle_passed_to_an_actor_pool(leaf_pool):
    with Caller.options(mode="ray", max_workers=2, actor_options=RAY_ACTOR).init(leaf_pool) as callers:
        assert gather([callers.call(i) for i in range(8)], timeout=60) == [2 * i for i in range(8)]
        wait_for(lambda: leaf_pool.get_pool_stats()["load_balancer"]["total_dispatched"] == 8)
        calls = leaf_pool.get_pool_stats()["load_balancer"]["total_calls"]
        assert sorted(calls.values()) == [4, 4], "least-total balancing holds across handles"


def _shared_figures(pool) -> tuple[int, int, int]:
    """Calls dispatched and completed as the balancer counts them, and the handles joined to it."""
    stats = pool.get_pool_stats()
    completed = sum(w["completed"] for w in stats["workers"].values())
    return stats["load_balancer"]["total_dispatched"], completed, stats["handles"]


def test_copies_that_went_idle_leave_the_balancer_and_their_calls_stay_counted(leaf_pool):
    with Visitor.options(mode="ray", actor_options=RAY_ACTOR).init() as visitor:
        # Each call unpickles a fresh copy of the handle in the visitor's process, as Ray tasks do.
        assert [visitor.visit(leaf_pool, i).result(timeout=30) for i in range(6)] == [0, 2, 4, 6, 8, 10]
        wait_for(lambda: _shared_figures(leaf_pool)[:2] == (6, 6))
        wait_for(lambda: _shared_figures(leaf_pool)[2] == 1)  # the six copies left: only the driver's is joined
        wait_for(lambda: visitor.report_threads().result(timeout=30) == 0)
    assert _shared_figures(leaf_pool) == (6, 6, 1)
    assert sum(leaf_pool.get_pool_stats()["load_balancer"]["total_calls"].values()) == 6


def test_a_copy_used_again_after_leaving_counts_each_call_once(leaf_pool):
    with Caller.options(mode="ray", actor_options=RAY_ACTOR).init(leaf_pool) as caller:
        assert caller.call(1).result(timeout=30) == 2
        wait_for(lambda: _shared_figures(leaf_pool) == (1, 1, 1))  # reported, then left when idle
        assert [caller.call(i).result(timeout=30) for i in range(3)] == [0, 2, 4]
        inside = caller.stats().result(timeout=30)  # reports first: the copy joins again
        assert inside["load_balancer"]["total_dispatched"] == 4 and inside["handles"] == 2
        wait_for(lambda: _shared_figures(leaf_pool)[2] == 1)
    assert _shared_figures(leaf_pool) == (4, 4, 1)


def test_a_copy_stops_quietly_after_its_pool_was_stopped(ray_runtime):
    pool = Leaf.options(mode="ray", max_workers=2, actor_options=RAY_ACTOR).init()
    with Caller.options(mode="ray", actor_options=RAY_ACTOR).init(pool) as caller:
        assert caller.call(3).result(timeout=30) == 6
        pool.stop()  # the balancer and the workers are gone; the caller's copy is still joined
        assert "stopped" in caller.stop_pool().result(timeout=60)


def test_local_pool_handles_refuse_to_pickle():
    with Leaf.options(mode="thread", max_workers=2).init() as pool:
        with pytest.raises(TypeError, match="only mode='ray' pools"):
            pickle.dumps(pool)


def test_nested_ray_pools_like_the_guide(ray_runtime):
    with Branch.options(mode="ray", max_workers=2, actor_options={"num_cpus": 0.1}).init() as branches:
        assert branches.process_group([1, 2, 3, 4, 5]).result(timeout=60) == [2, 4, 6, 8, 10]
        stats = branches.leaf_stats().result(timeout=30)
        assert stats["total_workers"] == 2 and stats["mode"] == "ray"


@pytest.mark.parametrize("outer", ["thread", "process"])
def test_coordinator_builds_a_process_pool_in_init(outer):
    with Branch.options(mode=outer).init(leaf_mode="process") as coordinator:
        assert coordinator.process_group([1, 2, 3]).result(timeout=60) == [2, 4, 6]


def test_a_forgotten_nested_process_pool_does_not_block_exit(tmp_path):
    script = tmp_path / "forgetful.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})
        from workers import Branch
        if __name__ == "__main__":
            coordinator = Branch.options(mode="thread").init(leaf_mode="process")
            print(coordinator.process_group([1, 2]).result(timeout=60))
            coordinator.stop()  # its Leaf process pool is never stopped
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[2, 4]"), done.stderr


def test_pool_actors_are_gone_after_stop(ray_runtime):
    pool = Leaf.options(mode="ray", max_workers=2, actor_options=RAY_ACTOR).init()
    assert pool.work(1).result(timeout=30) == 2
    actors = [slot.client.actor for slot in pool._dispatcher.live_slots()] + [pool._members.balancer]
    pool.stop()

    wait_for(lambda: all(actor_gone(a) for a in actors))


def test_a_lone_handle_reports_rarely_and_a_shared_one_in_short_batches(leaf_pool, monkeypatch):
    membership = leaf_pool._members
    reports = []
    original = membership._call

    def counting(method, *args):
        if method == "report":
            reports.append(time.monotonic())
        return original(method, *args)

    monkeypatch.setattr(membership, "_call", counting)

    def call_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            leaf_pool.work(1).result(timeout=30)

    call_for(1.2)
    assert len(reports) <= 4, f"{len(reports)} reports in 1.2 s from the only handle (one per 0.5 s expected)"

    @ray.remote(num_cpus=0.1)
    def use(pool):
        return pool.work(3).result(timeout=30)

    monkeypatch.setattr(ray_membership, "SHARED_AFTER_PICKLING_SECONDS", 1.0)
    assert ray.get(use.remote(leaf_pool), timeout=60) == 6
    call_for(0.2)  # passing the handle on made it shared
    reports.clear()
    call_for(0.5)
    assert len(reports) >= 5, f"only {len(reports)} reports in 0.5 s once the pool is shared (20 ms batches expected)"

    wait_for(lambda: leaf_pool.get_pool_stats()["handles"] == 1)  # the task's copy went idle and left
    call_for(0.3)  # the next report learns it
    reports.clear()
    call_for(1.2)
    assert len(reports) <= 4, f"{len(reports)} reports in 1.2 s once the copy left (one per 0.5 s expected)"


def test_an_unpickled_copy_attaches_without_asking_the_balancer_and_manages_nothing(ray_runtime, monkeypatch):
    pool = Leaf.options(mode="ray", max_workers=2, health_check="work", health_check_interval=60,
                        actor_options=RAY_ACTOR).init()
    try:
        asked = []
        original = ray_membership.RayMembership._call
        def recording(self, method, *args):
            if self is not pool._members:  # the creating handle reports on its own thread meanwhile
                asked.append(method)
            return original(self, method, *args)

        monkeypatch.setattr(ray_membership.RayMembership, "_call", recording)
        copy = pickle.loads(pickle.dumps(pool))
        assert asked == [], "attaching asked the balancer"
        assert copy._health is None and pool._health is not None, "only the creating handle health-checks"
        assert gather([copy.work(i) for i in range(4)], timeout=30) == [0, 2, 4, 6]
        copy.stop()
        assert pool.work(5).result(timeout=30) == 10
    finally:
        pool.stop()
