"""Where the start-up of a Ray pool goes, at 2 and 8 workers (median seconds of 3 each).

    python benchmarks/startup_profile.py

A Ray pool's balancer actor creates and owns its workers, so the workers can be
requested only once the balancer's process runs: a pool's start-up is one actor
start, then N in parallel. Rows: one raw actor (num_cpus=0, like the balancer)
until it answers; N raw actors until all answer (the baseline of
``scale.py``); one raw actor, then N raw actors, in that order (a pool's order,
without the library); and the pool of N until one broadcast has answered.
Starts a local Ray runtime (2 CPUs, no dashboard) and stops everything it starts.
"""
import statistics
import time

import bench_env  # this folder is the script's own, first on sys.path

bench_env.prepare()  # before the worker module is imported

import ray  # noqa: E402
import scale  # noqa: E402
from concurry_ray import gather  # noqa: E402
from scale_workers import RawEcho  # noqa: E402

SIZES = (2, 8)
REPEATS = 3


def answered(actors: list) -> None:
    """Wait until each of ``actors`` answered one call, then kill them."""
    try:
        ray.get([actor.echo.remote(0) for actor in actors], timeout=scale.WAIT)
    finally:
        for actor in actors:
            ray.kill(actor)


def one_actor() -> None:
    answered([ray.remote(num_cpus=0)(RawEcho).remote()])


def raw(size: int) -> None:
    answered([scale.raw_actor_class().remote() for _ in range(size)])


def one_then_raw(size: int) -> None:
    first = ray.remote(num_cpus=0)(RawEcho).remote()
    ray.get(first.echo.remote(0), timeout=scale.WAIT)
    try:
        raw(size)
    finally:
        ray.kill(first)


def pool(size: int) -> None:
    with scale.started_pool(scale.ray_pool_options(size)) as started:
        gather(started.broadcast("echo", 0), timeout=scale.WAIT)


def median_seconds(start) -> float:
    """Median seconds of ``start()`` over REPEATS runs, each after a pause while the last one's actors exit."""
    times = []
    for _ in range(REPEATS):
        time.sleep(scale.STARTUP_PAUSE)
        began = time.perf_counter()
        start()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    with bench_env.ray_runtime():
        print(f"{'':>10} {'one actor':>10} {'N raw':>10} {'one, then N':>12} {'pool of N':>10}", flush=True)
        for size in SIZES:
            figures = [median_seconds(one_actor), median_seconds(lambda: raw(size)),
                       median_seconds(lambda: one_then_raw(size)), median_seconds(lambda: pool(size))]
            print(f"N = {size:<6} " + " ".join(f"{value:>9.2f}s" for value in figures[:2])
                  + f" {figures[2]:>11.2f}s {figures[3]:>9.2f}s", flush=True)


if __name__ == "__main__":
    main()
