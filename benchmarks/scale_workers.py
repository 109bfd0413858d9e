"""The worker classes, the raw actor, the gate and the task of ``benchmarks/scale.py``.

They live in a module of their own, on the ``PYTHONPATH`` that ``scale.py`` sets,
so that Ray workers can import them by name. Nothing here imports Ray at module
level: ``scale.py`` wraps ``RawEcho``, ``Gate`` and ``dispatch_from_copy`` with
``ray.remote`` itself, and its thread-only section never imports Ray.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from concurry_ray import Worker, gather

COPY_WARMUP_CALLS = 20
"""Calls each copy of a pool handle makes before the gate: it joins the pool's balancer then."""


class Echo(Worker):
    """The pool worker of every section: a call that does nothing, and one that sleeps."""

    def echo(self, x: Any) -> Any:
        """Return ``x``: only dispatch is timed."""
        return x

    def nap(self, seconds: float) -> float:
        """Sleep ``seconds``, then return them."""
        time.sleep(seconds)
        return seconds


class RawEcho:
    """The hand-written Ray actor the pools are compared with."""

    def echo(self, x: Any) -> Any:
        """Return ``x``."""
        return x


class Gate:
    """An asyncio Ray actor that holds the dispatching tasks until all of them are ready, then
    lets them go at once (their Ray worker processes start one after another)."""

    def __init__(self) -> None:
        self._arrived = 0
        self._open = asyncio.Event()

    async def wait(self) -> None:
        """Count this caller as ready, and return once the gate opens."""
        self._arrived += 1
        await self._open.wait()

    async def arrived(self) -> int:
        """How many callers wait at the gate (or went through it)."""
        return self._arrived

    async def open(self) -> None:
        """Let every waiting caller, and every later one, through."""
        self._open.set()


def dispatch_from_copy(pool: Any, gate: Any, calls: int, seconds: float, timeout: float) -> tuple[float, float]:
    """In a Ray task, with its own copy of a pool handle: warm the copy up, wait at ``gate``, then
    submit ``calls`` calls of ``nap(seconds)`` and wait for all of them (each wait at most ``timeout``
    seconds). Returns the wall-clock times (``time.time()``) the calls began and ended."""
    import ray

    gather([pool.nap(seconds) for _ in range(COPY_WARMUP_CALLS)], timeout=timeout)
    ray.get(gate.wait.remote(), timeout=timeout)
    start = time.time()
    gather([pool.nap(seconds) for _ in range(calls)], timeout=timeout)
    return start, time.time()
