"""Pool throughput next to raw baselines, in one run.

    python benchmarks/pools.py [--calls N] [--repeat R]

Rows (medians of R runs; ours and the baselines take turns going first in each run):
* thread pool of 8 vs ThreadPoolExecutor(8): microseconds per trivial call, ours / baseline (target <= 1.5x);
* Ray pool of 2 vs the same two raw actors called round robin, and vs ray.util.ActorPool.map:
  throughput ratio (targets >= 0.8x and >= 2x);
* least-active pool of 64 threads on 10 ms sleeps: throughput as % of ideal (target >= 85 %).
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from concurry_ray import Worker, gather


SETTLE_SECONDS = 0.05  # a pause before each measurement, as in dispatch.py (which says why)


class Echo(Worker):
    """A trivial worker."""

    def echo(self, x):
        return x

    def nap(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def per_call(runs: dict[str, Callable[[int], Any]], calls: int, repeat: int) -> dict[str, float]:
    """Median microseconds per call of each ``run(calls)``; the runs take turns within every repeat."""
    samples: dict[str, list] = {name: [] for name in runs}
    order = list(runs)
    for turn in range(repeat):
        for name in order[turn % len(order):] + order[: turn % len(order)]:
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            runs[name](calls)
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def identity(x: Any) -> Any:
    return x


def thread_rows(calls: int, repeat: int) -> list:
    with Echo.options(mode="thread", max_workers=8).init() as pool, ThreadPoolExecutor(8) as executor:
        figures = per_call(
            {
                "ours": lambda n: gather([pool.echo(i) for i in range(n)]),
                "base": lambda n: [f.result() for f in [executor.submit(identity, i) for i in range(n)]],
            },
            calls,
            repeat,
        )
    ours, base = figures["ours"], figures["base"]
    return [("thread pool of 8", "ThreadPoolExecutor(8)", ours, base, ours / base, "<= 1.5x")]


def ray_rows(calls: int, repeat: int) -> list:
    import ray
    from ray.util import ActorPool

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:

        @ray.remote(num_cpus=0.1)
        class Raw:
            def echo(self, x):
                return x

        actors = [Raw.remote() for _ in range(2)]
        ray.get([a.echo.remote(0) for a in actors])
        with Echo.options(mode="ray", max_workers=2, actor_options={"num_cpus": 0.1}).init() as pool:
            gather([pool.echo(i) for i in range(50)])
            figures = per_call(
                {
                    "ours": lambda n: gather([pool.echo(i) for i in range(n)]),
                    "raw": lambda n: ray.get([actors[i % 2].echo.remote(i) for i in range(n)]),
                    "map": lambda n: list(ActorPool(actors).map(lambda a, v: a.echo.remote(v), range(n))),
                },
                calls,
                repeat,
            )
    finally:
        ray.shutdown()
    ours, raw, mapped = figures["ours"], figures["raw"], figures["map"]
    return [
        ("ray pool of 2", "2 raw actors, round robin", ours, raw, raw / ours, ">= 0.8x throughput"),
        ("ray pool of 2", "ray.util.ActorPool.map", ours, mapped, mapped / ours, ">= 2x throughput"),
    ]


def least_active_row(calls: int, repeat: int) -> list:
    with Echo.options(mode="thread", max_workers=64, load_balancing="active").init() as pool:
        gather(pool.broadcast("nap", 0))
        rates = []
        for _ in range(repeat):
            start = time.perf_counter()
            gather([pool.nap(0.01) for _ in range(calls)])
            rates.append(calls / (time.perf_counter() - start))
    achieved, ideal = statistics.median(rates), 64 / 0.01
    return [("least-active, 64 threads", "ideal 6400 calls/s", achieved, ideal, achieved / ideal, ">= 85 % of ideal")]


def meets(ratio: float, target: str) -> bool:
    """Whether ``ratio`` meets a target written as '<= 1.5x', '>= 2x throughput' or '>= 85 % of ideal'."""
    op, bound = target.split()[:2]
    limit = float(bound.rstrip("x")) / (100 if "%" in target else 1)
    return ratio <= limit if op == "<=" else ratio >= limit


def main() -> None:
    """Measure every row and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rows = thread_rows(args.calls, args.repeat) + ray_rows(args.calls, args.repeat)
    rows += least_active_row(args.calls, args.repeat)
    print(f"{'pool':26} {'baseline':28} {'ours':>10} {'base':>10} {'ratio':>7}  target")
    print("-" * 100)
    for name, baseline, ours, base, ratio, target in rows:
        mark = " " if meets(ratio, target) else "*"
        print(f"{name:26} {baseline:28} {ours:10.1f} {base:10.1f} {ratio:7.2f}{mark} {target}")
    print("thread and ray rows: microseconds per call; least-active row: calls per second; * = target missed")


if __name__ == "__main__":
    main()
