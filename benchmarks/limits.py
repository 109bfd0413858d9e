"""Limits benchmark: the cost of an uncontended acquire+release, and the rate achieved under contention.

    python benchmarks/limits.py            # thread, process and ray
    python benchmarks/limits.py thread     # only some modes

Uncontended: one worker of the mode runs ``with self.limits.acquire(...)`` in a
loop against a pool-shared set (a resource and a rate limit that never binds).
Contention: a pool (8 threads, 4 processes or 4 Ray actors) calls a method that
takes one call of ``CallLimit(capacity=100 per 1 s)``; the steady rate is the
grants between 1 s and 3 s after the first one, divided by 2 s, and "most in
1 s" counts the calls certainly granted inside one 1 s window (token bucket and
GCRA burst up to capacity on top of the refill; fixed windows allow twice the
capacity across a boundary; sliding windows never exceed it).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from concurry_ray import CallLimit, RateLimit, ResourceLimit, Worker, gather  # noqa: E402

TARGET_US = {"thread": 10, "process": 300, "ray": 1000}
POOL = {"thread": 8, "process": 4, "ray": 4}
ALGORITHMS = {"thread": ["sliding_window", "token_bucket", "gcra", "leaky_bucket", "fixed_window"]}
RATE = 100


class Bench(Worker):
    def loop(self, rounds: int) -> float:
        """Microseconds per acquire+release."""
        start = time.perf_counter()
        for _ in range(rounds):
            with self.limits.acquire(requested={"slots": 1, "tokens": 1}):
                pass
        return (time.perf_counter() - start) / rounds * 1e6

    def call(self) -> tuple[float, float]:
        """When the acquisition was asked for and when it returned: the grant lies between."""
        asked = time.monotonic()
        with self.limits.acquire():
            return asked, time.monotonic()


def options(mode: str, **extra) -> dict:
    if mode == "ray":
        extra["actor_options"] = {"num_cpus": 0.1}
    return {"mode": mode, **extra}


def uncontended(mode: str) -> float:
    rounds = 20000 if mode == "thread" else 2000
    limits = [ResourceLimit("slots", 4), RateLimit("tokens", 1, 1e12)]
    with Bench.options(**options(mode, limits=limits)).init() as worker:
        worker.loop(200).result()
        return min(worker.loop(rounds).result() for _ in range(3))


def contended(mode: str, algorithm: str) -> tuple[float, int]:
    limits = [CallLimit(window_seconds=1, capacity=RATE, algorithm=algorithm)]
    with Bench.options(**options(mode, max_workers=POOL[mode], limits=limits)).init() as pool:
        gather([pool.call() for _ in range(POOL[mode])])
        time.sleep(1.1)  # let the warm-up calls leave the window
        spans = gather([pool.call() for _ in range(4 * RATE + 50)])
    first = min(granted for _, granted in spans)
    steady = sum(1 for _, granted in spans if first + 1 <= granted < first + 3) / 2
    # grants certainly inside one window: asked and returned within it (scheduling jitter cannot inflate this)
    most = max(sum(1 for asked, granted in spans if s <= asked and granted < s + 1) for s, _ in spans)
    return steady, most


def main(modes: list[str]) -> None:
    if "ray" in modes:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    print(f"{'mode':8} {'acquire+release':>16} {'target':>10}")
    for mode in modes:
        print(f"{mode:8} {uncontended(mode):13.1f} us {'<= ' + str(TARGET_US[mode]) + ' us':>10}")
    print()
    print(f"{'mode':8} {'algorithm':15} {'configured/s':>12} {'achieved/s':>11} {'most in 1 s':>12}")
    for mode in modes:
        for algorithm in ALGORITHMS.get(mode, ["sliding_window"]):
            steady, most = contended(mode, algorithm)
            print(f"{mode:8} {algorithm:15} {RATE:12d} {steady:11.1f} {most:12d}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["thread", "process", "ray"])
