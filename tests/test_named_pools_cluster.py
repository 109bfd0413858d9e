"""A detached named pool outlives the driver that made it, on a real `ray start --head` cluster.

Driver A creates the pool, calls it and exits; driver B attaches with get_pool, calls
it and sees A's calls in the stats; a Serve deployment attaches by name; driver C
removes the pool. An elastic detached pool, made by a driver that exits, grows and
shrinks for the next driver's burst of calls. Run as a script, this module is one
of those drivers: ``python test_named_pools_cluster.py ADDRESS
create|attach|serve|remove|create-elastic|burst``; each prints one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

POOL = "cluster-embedder"
ELASTIC_POOL = "cluster-elastic"
SERVE_PORT_ARG = 3


def create() -> dict:
    from concurry_ray import gather
    from workers import Counter

    from concurry_ray import ResourceLimit

    pool = Counter.options(mode="ray", name=POOL, lifetime="detached", max_workers=2,
                           actor_options={"num_cpus": 0.1}, limits=[ResourceLimit(key="slots", capacity=2)]).init()
    gather([pool.echo(i) for i in range(4)] + [pool.slots_in_use()], timeout=60)
    pids = sorted(gather(pool.broadcast("pid"), timeout=60))
    pool.stop()  # detaches this handle; the driver then exits
    return {"pids": pids}


def attach() -> dict:
    from concurry_ray import gather, get_pool

    pool = get_pool(POOL)
    gather([pool.echo(i) for i in range(3)], timeout=60)
    in_use = pool.slots_in_use().result(timeout=60)  # the pool's budget outlived the driver that made it
    pids = sorted(gather(pool.broadcast("pid"), timeout=60))
    completed = sum(w["completed"] for w in pool.get_pool_stats()["workers"].values())
    pool.stop()
    return {"pids": pids, "completed": completed, "slots_in_use": in_use}


def served() -> dict:
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Front:
        def __init__(self) -> None:
            from concurry_ray import get_pool

            self.pool = get_pool(POOL)

        async def __call__(self, value: int) -> int:
            return await self.pool.pid()

    serve.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[SERVE_PORT_ARG])})
    handle = serve.run(Front.bind(), name="front", route_prefix=None)
    pids = sorted({handle.remote(i).result(timeout_s=60) for i in range(6)})
    serve.shutdown()
    return {"pids": pids}


def remove() -> dict:
    from concurry_ray import get_pool, remove_pool
    from concurry_ray.ray.limits_holder import list_holders
    from concurry_ray.ray.named_pools import list_pools

    killed = remove_pool(POOL, timeout=10)
    try:
        get_pool(POOL)
        found_after = True
    except LookupError:
        found_after = False
    return {"killed": killed, "found_after": found_after, "pools": list_pools(), "holders": list_holders()}


def create_elastic() -> dict:
    from workers import Counter

    pool = Counter.options(mode="ray", name=ELASTIC_POOL, lifetime="detached", max_workers=3, min_workers=1,
                           idle_timeout=0.5, actor_options={"num_cpus": 0.1}).init()
    size = pool.get_pool_stats()["total_workers"]
    pool.stop()  # detaches; the driver exits, and nobody manages the pool but its balancer
    return {"size": size}


def burst() -> dict:
    import time

    from concurry_ray import gather, get_pool, remove_pool

    pool = get_pool(ELASTIC_POOL)
    calls = [pool.sleep(0.4) for _ in range(9)]
    sizes, deadline = [], time.monotonic() + 60
    while not all(call.done() for call in calls) and time.monotonic() < deadline:
        sizes.append(pool.get_pool_stats()["total_workers"])
        time.sleep(0.05)
    results = gather(calls, timeout=60)
    deadline = time.monotonic() + 30
    while pool.get_pool_stats()["total_workers"] > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    stats = pool.get_pool_stats()
    pool.stop()
    remove_pool(ELASTIC_POOL, timeout=10)
    return {"results": results, "max_size": max(sizes), "size_after": stats["total_workers"],
            "events": [stats["scaled_up"], stats["scaled_down"]]}


def main() -> None:
    import ray

    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    steps = {"create": create, "attach": attach, "serve": served, "remove": remove,
             "create-elastic": create_elastic, "burst": burst}
    step = steps[sys.argv[2]]
    print("RESULT " + json.dumps(step()), flush=True)
    ray.shutdown()


def drive(address: str, env: dict, step: str, *extra: str) -> dict:
    run = subprocess.run([sys.executable, __file__, address, step, *extra], env=env, capture_output=True,
                         text=True, timeout=180)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, f"driver {step} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.timeout(600)
def test_a_detached_pool_serves_drivers_that_come_and_go_and_a_serve_app(ray_head):
    from conftest import free_port

    address, env, _ = ray_head
    made = drive(address, env, "create")
    attached = drive(address, env, "attach")
    assert attached["pids"] == made["pids"]  # the same workers, after their creator exited
    assert attached["completed"] == (5 + 2) + (4 + 2)  # A's calls and B's, each counted once
    assert attached["slots_in_use"] == 1
    through_serve = drive(address, env, "serve", str(free_port()))["pids"]
    assert through_serve and set(through_serve) <= set(made["pids"])
    removed = drive(address, env, "remove")
    assert removed == {"killed": 0, "found_after": False, "pools": [], "holders": []}



@pytest.mark.timeout(600)
def test_a_detached_elastic_pool_scales_for_a_driver_after_its_creator_exited(ray_head):
    address, env, _ = ray_head
    assert drive(address, env, "create-elastic") == {"size": 1}
    burst = drive(address, env, "burst")
    assert burst["results"] == [0.4] * 9
    assert (burst["max_size"], burst["size_after"], burst["events"]) == (3, 1, [2, 2])


if __name__ == "__main__":
    main()
