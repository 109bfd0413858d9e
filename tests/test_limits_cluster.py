"""Two driver processes attached to one `ray start --head` cluster share a named LimitSet.

Run as a script, this module is one such driver: it attaches to the cluster,
builds the named set, says "ready", waits for "go", acquires as fast as the set
allows for a few seconds and prints the spans it held.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

CAPACITY = 30
RUN_SECONDS = 3.0
SET_NAME = "test-cluster-shared-calls"


def drive(address: str) -> None:
    """One driver: attach, wait for "go", acquire for RUN_SECONDS, print spans; then obey "remove"."""
    import ray

    from concurry_ray import CallLimit, LimitSet

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    limits = LimitSet([CallLimit(window_seconds=1, capacity=CAPACITY)], shared=True, mode="ray", name=SET_NAME)
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    spans, stop_at = [], time.monotonic() + RUN_SECONDS
    while time.monotonic() < stop_at:
        before = time.monotonic()
        with limits.acquire(timeout=10):
            spans.append((before, time.monotonic()))
    print(json.dumps(spans), flush=True)
    if sys.stdin.readline().strip() == "remove":
        limits.remove()
    ray.shutdown()


def test_two_drivers_share_a_named_limit_set(ray_head):
    from test_limits_pool import most_in_any_window

    address, env, _ = ray_head
    drivers = [
        subprocess.Popen([sys.executable, __file__, address], env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        for driver in drivers:
            assert driver.stdout.readline().strip() == "ready"
        for driver in drivers:
            driver.stdin.write("go\n")
            driver.stdin.flush()
        per_driver = [json.loads(driver.stdout.readline()) for driver in drivers]
        drivers[0].stdin.write("remove\n")
        drivers[1].stdin.write("keep\n")
        for driver in drivers:
            driver.stdin.close()
            assert driver.wait(timeout=60) == 0
    finally:
        for driver in drivers:
            if driver.poll() is None:
                driver.kill()
    assert all(len(spans) > 10 for spans in per_driver), "both drivers drew from the budget"
    spans = [tuple(s) for driver_spans in per_driver for s in driver_spans]
    start = min(lo for lo, _ in spans)
    assert most_in_any_window(spans, 1.0) <= CAPACITY
    assert sum(1 for _, hi in spans if hi < start + RUN_SECONDS) >= 0.9 * CAPACITY * RUN_SECONDS


if __name__ == "__main__":
    drive(sys.argv[1])
