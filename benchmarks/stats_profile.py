"""Where get_pool_stats() spends its time at 2, 8 and 32 Ray workers (median ms of 30 reads each).

    python benchmarks/stats_profile.py

Rows: one trivial call to the pool's balancer (a round trip), the balancer's stats (from the counts
the handles report; it asks only the workers whose counts changed since its last read, so after the
first read of a quiet pool, none), the whole read, and the whole read while every worker has had a
call since the last read (a busy pool: each read asks every worker).
Starts a local Ray runtime (2 CPUs, no dashboard) and stops every pool it makes.
"""
import statistics
import time

import bench_env  # this folder is the script's own, first on sys.path

bench_env.prepare()  # before the worker module is imported

import ray  # noqa: E402
from scale_workers import Echo  # noqa: E402

from concurry_ray import gather  # noqa: E402

from concurry_ray.ray.named_pools import find_balancer  # noqa: E402

SIZES = (2, 8, 32)

def median_ms(fn, reads: int = 30, before=None) -> float:
    """Median milliseconds of ``fn()`` over ``reads`` calls, 20 ms apart (each after ``before()``, untimed)."""
    times = []
    for _ in range(reads):
        if before is not None:
            before()
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1e3)
        time.sleep(0.02)
    return statistics.median(times)


def main() -> None:
    with bench_env.ray_runtime():
        for size in SIZES:
            profile(size)


def profile(size: int) -> None:
    """Print the four rows for a pool of ``size`` workers."""
    pool = Echo.options(mode="ray", name=f"stats-profile-{size}", max_workers=size,
                        actor_options={"num_cpus": 0.01}).init()
    try:
        pool.echo(1).result(timeout=120)
        balancer = find_balancer(f"stats-profile-{size}")
        rows = {
            "balancer.about() (one round trip)": lambda: ray.get(balancer.about.remote(), timeout=60),
            "balancer.stats()": lambda: ray.get(balancer.stats.remote(), timeout=60),
            "get_pool_stats()": pool.get_pool_stats,
        }
        for row, read in rows.items():
            print(f"{size:>3} workers  {row:<45} {median_ms(read):7.2f} ms", flush=True)
        every_worker = lambda: gather(pool.broadcast("echo", 0), timeout=60)  # noqa: E731
        busy = median_ms(pool.get_pool_stats, before=every_worker)
        print(f"{size:>3} workers  {'get_pool_stats() after a call on every worker':<45} {busy:7.2f} ms", flush=True)
    finally:
        pool.stop(timeout=30)


if __name__ == "__main__":
    main()
