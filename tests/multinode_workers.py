"""Worker classes for tests/test_multinode.py (importable by the cluster's worker processes)."""

from __future__ import annotations

import os
import time

from concurry_ray import Worker


class Placed(Worker):
    """Says which node and process it runs in, and holds a limit slot for a while."""

    def node(self, _: int = 0) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()

    def hold(self, seconds: float) -> list:
        with self.limits.acquire({"slots": 1}, timeout=60):
            start = time.time()
            time.sleep(seconds)
            return [start, time.time()]
