"""A small Ray job: a pool of two actors squares some numbers, then prints a checkable line.

Run it locally (starts a local Ray runtime) or on a cluster:

    python examples/pool_job.py
    RAY_ADDRESS=127.0.0.1:6379 python examples/pool_job.py
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python examples/pool_job.py

The last line of output is ``pool_job: sum=<n> calls=<n> workers=<n>``.
"""

from __future__ import annotations

import json
import os
import socket

import ray

import concurry_ray
from concurry_ray import Worker, gather

COUNT = 50


class Squarer(Worker):
    """Squares numbers and says which host and process did it."""

    def square(self, x: int) -> int:
        return x * x

    def where(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"


def main() -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Plain ray.init() joins the cluster named by RAY_ADDRESS (set by `ray job submit`),
    # or starts a local runtime when there is none.
    ray.init(logging_level="ERROR", log_to_driver=False)
    pool = Squarer.options(mode="ray", max_workers=2, actor_options={"num_cpus": 0.1}).init()
    try:
        total = sum(gather([pool.square(i) for i in range(COUNT)], timeout=120))
        hosts = sorted(set(gather(pool.broadcast("where"), timeout=60)))
        stats = pool.get_pool_stats()
    finally:
        pool.stop()
    calls = stats["load_balancer"]["total_dispatched"]
    print(f"pool_job: concurry_ray from {os.path.dirname(concurry_ray.__file__)}")
    print("pool_job: workers at " + ", ".join(hosts))
    print("pool_job: stats " + json.dumps(stats, sort_keys=True, default=str))
    print(f"pool_job: sum={total} calls={calls} workers={stats['total_workers']}", flush=True)
    expected = sum(i * i for i in range(COUNT))
    return 0 if (total, calls) == (expected, COUNT) else 1


if __name__ == "__main__":
    raise SystemExit(main())
