"""A detached named pool outlives the driver that made it, on a real `ray start --head` cluster.

Driver A creates the pool, calls it and exits; driver B attaches with get_pool, calls
it and sees A's calls in the stats; a Serve deployment attaches by name; driver C
removes the pool. Run as a script, this module is one of those drivers:
``python test_named_pools_cluster.py ADDRESS create|attach|serve|remove``; each
prints one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

POOL = "cluster-embedder"
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


def main() -> None:
    import ray

    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    step = {"create": create, "attach": attach, "serve": served, "remove": remove}[sys.argv[2]]
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


if __name__ == "__main__":
    main()
