"""concurry_ray in one minute: one plain class, run on a thread and as a pool of Ray actors.

    make demo            (or, with the package installed: python examples/quickstart.py)

Runs on an embedded local Ray runtime: no cluster, no ``ray start``.
"""

import asyncio
import time

import ray

from concurry_ray import Worker, gather


class Accumulator(Worker):
    """An ordinary class. Each worker built from it keeps its own running total."""

    def __init__(self, scale: int):
        self.scale = scale
        self.total = 0

    def add(self, x: int) -> int:
        self.total += x * self.scale
        return self.total

    def square(self, x: int) -> int:
        return x * x

    def divide(self, a: float, b: float) -> float:
        return a / b

    async def fetch(self, key: str, delay: float) -> str:
        await asyncio.sleep(delay)  # async methods of one worker run concurrently on its event loop
        return key.upper()


def main() -> None:
    """The tour: a thread worker, then the same class as a pool of four Ray actors."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        with Accumulator.options(mode="thread").init(scale=10) as worker:
            print("thread worker, running totals:", gather([worker.add(i) for i in range(1, 5)]))
            start = time.monotonic()
            keys = gather([worker.fetch(k, 0.2) for k in "abcde"])
            print(f"5 async calls of 0.2 s each: {keys} in {time.monotonic() - start:.1f} s")

        with Accumulator.options(mode="ray", max_workers=4, actor_options={"num_cpus": 0.25}).init(scale=1) as pool:
            print("ray pool, squares:", gather([pool.square(i) for i in range(8)]))
            print("ray pool, each worker's own total:", gather([pool.add(1) for _ in range(8)]))
            # A future is a valid argument: the second call starts when the first is done,
            # and the value goes from actor to actor without passing through this process.
            print("pipeline, square(square(3)):", pool.square(pool.square(3)).result())
            try:
                pool.divide(1, 0).result()
            except ZeroDivisionError as error:
                print(f"caught the original exception type: {type(error).__name__}: {error}")
            stats = pool.get_pool_stats()
            balancer = stats["load_balancer"]
            print(f"pool stats: {stats['total_workers']} workers, {balancer['algorithm']}, "
                  f"{balancer['total_dispatched']} calls dispatched")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
