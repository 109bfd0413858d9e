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
