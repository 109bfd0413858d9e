"""Ray pools settle every future whatever dies: a dead worker, a dead balancer, a stopped pool, a failing constructor."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import pickle
import threading
import time

import pytest
import ray
from conftest import RAY_ACTOR, actor_gone, wait_for
from workers import Leaf

from concurry_ray import ConfigError, PoolStoppedError, Worker, WorkerCrashedError, WorkerInitError, gather
from concurry_ray.futures import Future
from concurry_ray.protocol import Call
from concurry_ray.ray import backend


class Fragile(Worker):
    """A worker whose constructor fails once the file ``marker`` exists (so its replacement cannot start)."""

    def __init__(self, marker: str):
        if os.path.exists(marker):
            raise RuntimeError(f"{marker} exists")

    def work(self, x: int) -> int:
        return x * 2


@pytest.fixture
def pool(ray_runtime):
    handle = Leaf.options(mode="ray", max_workers=2, actor_options=RAY_ACTOR).init()
    yield handle
    handle.stop(timeout=30)


def settled_within(futures: list, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    for future in futures:
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return False
        except Exception:
            pass
    return True


def test_a_call_sent_to_a_worker_known_dead_fails_instead_of_being_dropped(pool):
    client = pool._dispatcher.slot(0).client
    client.kill()  # asynchronous: a call or two may still be answered
    wait_for(lambda: isinstance(client.submit(Call("work", (1,), {}), Future()).exception(timeout=30), WorkerCrashedError))
    late = client.submit(Call("work", (2,), {}), Future())
    with pytest.raises(WorkerCrashedError, match="died before work\\(\\) was sent"):
        late.result(timeout=5)


def test_broadcast_right_after_a_worker_died_settles_every_future(pool):
    pool._dispatcher.slot(0).client.kill()
    gather([pool.work(i) for i in range(4)], return_exceptions=True, timeout=30)  # one of them sees the death
    assert settled_within(pool.broadcast("work", 3), 30)
    wait_for(lambda: gather(pool.broadcast("work", 3), return_exceptions=True, timeout=30) == [6, 6], timeout=30)


def test_the_pool_serves_again_after_its_balancer_actor_is_killed(pool):
    copy = pickle.loads(pickle.dumps(pool))
    assert gather([pool.work(1), copy.work(2)], timeout=30) == [2, 4]
    old_workers = {slot.client.actor._actor_id for slot in pool._dispatcher.live_slots()}
    ray.kill(pool._members.balancer, no_restart=False)
    made = []

    def served(handle) -> bool:
        future = handle.work(5)
        made.append(future)
        try:
            return future.result(timeout=5) == 10
        except (WorkerCrashedError, TimeoutError):
            return False

    wait_for(lambda: served(pool), timeout=30)
    wait_for(lambda: served(copy), timeout=30)
    assert settled_within(made, 30), "a call made around the balancer's death never settled"
    for handle in (pool, copy):  # every handle moves to the restarted balancer's workers
        wait_for(lambda: not old_workers & {s.client.actor._actor_id for s in handle._dispatcher.live_slots()}, 30)
        assert gather([handle.work(i) for i in range(4)], timeout=30) == [0, 2, 4, 6]
    copy.stop()


def test_a_copy_that_outlives_its_pool_fails_its_calls(ray_runtime):
    pool = Leaf.options(mode="ray", max_workers=2, actor_options=RAY_ACTOR).init()
    copy = pickle.loads(pickle.dumps(pool))
    assert copy.work(1).result(timeout=30) == 2
    pool.stop()
    outcomes = [copy.work(i) for i in range(3)] if not copy._dispatcher.closed else []
    assert settled_within(outcomes, 30)
    wait_for(lambda: _refused(copy), timeout=30)
    copy.stop()


def _refused(handle) -> bool:
    try:
        handle.work(1).result(timeout=5)
    except (PoolStoppedError, WorkerCrashedError):
        return True
    return False


def test_calls_fail_with_worker_init_error_when_no_replacement_can_be_built(ray_runtime, tmp_path):
    marker = str(tmp_path / "broken")
    pool = Fragile.options(mode="ray", actor_options=RAY_ACTOR).init(marker)
    try:
        assert pool.work(1).result(timeout=30) == 2
        open(marker, "w").close()
        actor = pool._dispatcher.slot(0).client.actor
        ray.kill(actor, no_restart=True)
        assert actor_gone(actor)
        with pytest.raises(WorkerCrashedError, match="while running work"):
            pool.work(0).result(timeout=30)  # the first call to learn of the death
        waiting = [pool.work(i) for i in range(3)]
        assert settled_within(waiting, 30), "calls waited forever for a worker that cannot be built"
        errors = [f.exception() for f in waiting]
        assert all(isinstance(e, WorkerInitError) and "broken exists" in str(e) for e in errors), errors
        with pytest.raises(WorkerInitError, match="broken exists"):
            pool.work(9).result(timeout=5)
    finally:
        pool.stop(timeout=10)


def test_a_call_submitted_while_its_worker_death_is_handled_settles(ray_runtime, monkeypatch):
    """A call whose submit overlaps the handling of its worker's death fails at once instead of
    waiting on the dead worker's client forever. The overlap is made to happen: the client reads
    the first failure only once the third call is being submitted, and that submit goes on only
    once the death is handled."""
    with Leaf.options(mode="ray", actor_options=RAY_ACTOR).init() as pool:
        client = pool._dispatcher.slot(0).client
        ray.kill(client.actor, no_restart=True)
        assert actor_gone(client.actor)
        submitting = threading.Event()
        reads_failure, looks_at_arguments = backend.unwrap_ray_error, backend._has_refs

        def once_the_third_call_is_submitted(error, label):
            submitting.wait(10)
            return reads_failure(error, label)

        def after_the_death_is_handled(call):
            if call.args == (777,):
                submitting.set()
                wait_for(lambda: not client.alive(), timeout=10)
            return looks_at_arguments(call)

        monkeypatch.setattr(backend, "unwrap_ray_error", once_the_third_call_is_submitted)
        monkeypatch.setattr(backend, "_has_refs", after_the_death_is_handled)
        calls = [pool.work(1), pool.work(2), pool.work(777)]  # the first two fill the client's window
        assert settled_within(calls, 30), "a call waited on the dead worker's client"
        outcomes = [f.exception() for f in calls]
        assert all(isinstance(e, WorkerCrashedError) for e in outcomes), outcomes
        assert "died before work() was sent to it" in str(outcomes[2]), outcomes  # refused, not sent to the dead actor
        monkeypatch.undo()
        assert pool.work(5).result(timeout=30) == 10


def test_two_handles_reporting_one_death_start_one_replacement(pool):
    balancer = pool._members.balancer
    dead = pool._dispatcher.slot(0).client.actor
    ray.kill(dead, no_restart=True)
    first, second = ray.get([balancer.replace.remote(0, dead), balancer.replace.remote(0, dead)], timeout=60)
    assert first[1][0] == second[1][0] != dead  # Ray's actor handles compare by actor id
    assert ray.get(balancer.stats.remote(), timeout=30)["workers"][0]["restarts"] == 1


def test_an_actor_the_cluster_can_never_schedule_is_a_config_error(ray_runtime):
    cpus = ray.cluster_resources()["CPU"]
    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"num_cpus={cpus + 62!r}.*could never be scheduled"):
        Leaf.options(mode="ray", actor_options={"num_cpus": cpus + 62}).init()
    assert time.monotonic() - start < 10


def test_stats_count_calls_a_copy_made_as_soon_as_their_results_are_back(pool):
    @ray.remote(num_cpus=0.1)
    def use(handle, values):
        return gather([handle.work(v) for v in values], timeout=60)

    expected = 0
    for round_ in range(5):
        values = list(range(round_ + 1))
        assert ray.get(use.remote(pool, values), timeout=60) == [2 * v for v in values]
        expected += len(values)
        stats = pool.get_pool_stats()
        completed = sum(w["completed"] for w in stats["workers"].values())
        assert (completed, stats["load_balancer"]["total_dispatched"]) == (expected, expected), f"round {round_}"


class Broken(Worker):
    def __init__(self):
        raise ValueError("this constructor always fails")

    def work(self) -> None:
        return None


def test_a_failed_init_leaves_no_limits_holder_behind(ray_runtime):
    from concurry_ray import ResourceLimit
    from concurry_ray.ray.limits_holder import list_holders

    before = list_holders()
    with pytest.raises(WorkerInitError, match="always fails"):
        Broken.options(mode="ray", max_workers=2, limits=[ResourceLimit("seats", 1)], actor_options=RAY_ACTOR).init()
    wait_for(lambda: list_holders() == before, timeout=30)


def test_a_sigkilled_driver_leaves_no_pool_owned_limits_holder_behind(ray_runtime, tmp_path):
    from concurry_ray.ray.limits_holder import list_holders

    script = tmp_path / "driver.py"
    script.write_text(
        "import os, signal, sys\n"
        "import ray\n"
        "from concurry_ray import ResourceLimit\n"
        "from concurry_ray.ray.limits_holder import list_holders\n"
        "from workers import Leaf\n"
        "ray.init(address=sys.argv[1], logging_level='ERROR')\n"
        "pool = Leaf.options(mode='ray', max_workers=2, limits=[ResourceLimit('seats', 1)],\n"
        "                    actor_options={'num_cpus': 0.1}).init()\n"
        "assert pool.work(1).result(timeout=60) == 2\n"
        "open(sys.argv[2], 'w').write(' '.join(list_holders()))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    names_file = tmp_path / "holders"
    before = set(list_holders())
    done = subprocess.run(
        [sys.executable, str(script), ray_runtime.get_runtime_context().gcs_address, str(names_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, cwd=str(pathlib.Path(__file__).parent),
    )
    assert done.returncode == -signal.SIGKILL
    made = set(names_file.read_text().split()) - before
    assert len(made) == 1
    start = time.monotonic()
    wait_for(lambda: not made & set(list_holders()), timeout=30)
    assert time.monotonic() - start < 15
