"""A Ray pool behind a Ray Serve deployment: the replica gets the pool handle as a bind argument.

The handle pickles into a small object; unpickled in the replica it dispatches straight into
the driver's pool, and the pool's stats (kept by its balancer actor) count those calls.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from conftest import RAY_ACTOR, free_port, wait_for
from workers import Leaf

serve = pytest.importorskip("ray.serve")

REQUESTS = 10


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, num_replicas=1)
class Doubler:
    """Each request ?x=N calls pool.work(N) on the pool it was built with."""

    def __init__(self, pool):
        self.pool = pool

    def __call__(self, request) -> dict:
        x = int(request.query_params["x"])
        return {"x": x, "doubled": self.pool.work(x).result(timeout=30)}


@pytest.fixture
def served_pool(ray_runtime):
    pool = Leaf.options(mode="ray", max_workers=2, actor_options=RAY_ACTOR).init()
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Doubler.bind(pool), name="pool_app", route_prefix="/double")
        yield pool, f"http://127.0.0.1:{port}/double"
    finally:
        serve.shutdown()
        pool.stop()


def test_serve_replica_dispatches_into_the_drivers_pool(served_pool):
    pool, url = served_pool
    replies = []
    for x in range(REQUESTS):
        with urllib.request.urlopen(f"{url}?x={x}", timeout=30) as response:
            assert response.status == 200
            replies.append(json.loads(response.read()))
    assert replies == [{"x": x, "doubled": 2 * x} for x in range(REQUESTS)]
    # The replica's handle reports its counters to the balancer in ~20 ms batches: a call's
    # dispatch and its completion may arrive in different batches.
    def reported(stats: dict) -> bool:
        completed = sum(w["completed"] for w in stats["workers"].values())
        return stats["load_balancer"]["total_dispatched"] >= REQUESTS and completed >= REQUESTS

    wait_for(lambda: reported(pool.get_pool_stats()))
    stats = pool.get_pool_stats()
    assert stats["load_balancer"]["total_dispatched"] == REQUESTS, "only the replica called the pool"
    assert sum(w["completed"] for w in stats["workers"].values()) == REQUESTS
