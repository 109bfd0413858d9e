"""Worker classes used across the tests (a module of its own so every mode can import them)."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from concurry_ray import Worker


class Counter(Worker):
    """Keeps per-worker state."""

    def __init__(self, start: int = 0, step: int = 1):
        self.value = start
        self.step = step

    def incr(self) -> int:
        self.value += self.step
        return self.value

    def add(self, *values) -> int:
        return sum(values)

    def echo(self, value):
        return value

    def pid(self) -> int:
        return os.getpid()

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    async def asleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    def fail(self, message: str) -> None:
        raise KeyError(message)

    def slots_in_use(self, key: str = "slots") -> float:
        """Hold one unit of the pool's limit ``key`` and say how many units are in use meanwhile."""
        with self.limits.acquire({key: 1}):
            return self.limits.get_stats()["limits"][key]["used"]

    def make_lock(self):
        return threading.Lock()

    def raise_unpicklable(self):
        raise UnpicklableError(threading.Lock())


class UnpicklableError(Exception):
    """An exception carrying a lock, which cannot be pickled."""

    def __init__(self, lock):
        super().__init__("carries a lock")
        self.lock = lock


class BrokenInit(Worker):
    """A constructor that raises."""

    def __init__(self, value: int):
        raise ValueError(f"bad value {value}")

    def noop(self) -> None:
        return None


class Stateful(Worker):
    """The guide's StatefulWorker: counts its own calls."""

    def __init__(self, multiplier: int = 2):
        self.multiplier = multiplier
        self.count = 0

    def process(self, x: int) -> dict:
        self.count += 1
        return {"result": x * self.multiplier, "count": self.count, "pid": os.getpid(), "id": id(self)}

    def slow(self, seconds: float) -> tuple:
        time.sleep(seconds)
        return self.ident()

    def ident(self) -> tuple:
        return (os.getpid(), id(self))

    def healthy(self) -> bool:
        return not getattr(self, "sick", False)

    def fall_ill(self) -> None:
        self.sick = True

    def get_count(self) -> int:
        return self.count


class Tracker(Worker):
    """Records start/end times of calls, to measure real concurrency."""

    def work(self, seconds: float, tag=None) -> tuple:
        start = time.time()
        time.sleep(seconds)
        return (start, time.time(), tag, os.getpid())


class Leaf(Worker):
    """The guide's LeafWorker."""

    def work(self, x: int) -> int:
        return x * 2


class Branch(Worker):
    """The guide's BranchWorker: builds its own Ray pool of leaves."""

    def __init__(self, leaf_mode: str = "ray"):
        options = {"actor_options": {"num_cpus": 0.1}} if leaf_mode == "ray" else {}
        self.leaf_pool = Leaf.options(mode=leaf_mode, max_workers=2, **options).init()

    def process_group(self, values: list) -> list:
        return [f.result() for f in [self.leaf_pool.work(x) for x in values]]

    def leaf_stats(self) -> dict:
        return self.leaf_pool.get_pool_stats()


class Visitor(Worker):
    """Calls into a pool handle passed with each call (a fresh copy every time) and keeps none."""

    def visit(self, pool, x: int) -> int:
        return pool.work(x).result()

    def report_threads(self) -> int:
        return sum(thread.name == "concurry-ray-report" for thread in threading.enumerate())


class Caller(Worker):
    """Receives a pool handle and calls into it from wherever it runs."""

    def __init__(self, pool):
        self.pool = pool

    def call(self, x: int) -> int:
        return self.pool.work(x).result()

    def stats(self) -> dict:
        return self.pool.get_pool_stats()

    def stop_pool(self) -> str:
        self.pool.stop()
        return repr(self.pool)
