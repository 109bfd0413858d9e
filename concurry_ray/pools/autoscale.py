"""Elastic pools: grow while calls wait for a worker, shrink workers that stay idle.

A pool with ``min_workers < max_workers`` starts with ``initial_workers`` (default
``min_workers``). Its workers take one call at a time (unless ``max_queued_tasks``
says otherwise); further calls wait in the pool's queue, and an :class:`Autoscaler`
thread on the handle that manages the pool looks every ``TICK_SECONDS``:

- calls wait in the queue: add as many workers as calls wait, up to
  ``max_workers``; a pool with limits adds one at a time, and none while a call
  waits on a limit (it would not run sooner on a new worker);
- no call waits: retire the workers idle for ``idle_timeout`` seconds (longest
  idle first), down to ``min_workers``. A retired worker finishes what it has.

The decision is :func:`plan`, a pure function; the thread only reads the figures
and applies it through the Dispatcher and the membership, as a resize does. A Ray
pool is scaled by its balancer actor instead, from what every handle reports
(see ``concurry_ray.ray.balancer``), with the same :class:`ScalingState`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, NamedTuple, Optional

from .dispatch import Dispatcher

log = logging.getLogger("concurry_ray")
TICK_SECONDS = 0.1


class Step(NamedTuple):
    """What to do now: start ``grow`` workers, or retire the workers at ``retire``."""

    grow: int
    retire: list


def plan(
    idle_for: dict[int, float], starting: int, waiting: int, limits_waiting: Optional[bool], options: Any
) -> Step:
    """The scaling step for a pool whose workers have been idle ``idle_for`` seconds (by index; 0 if
    busy), with ``starting`` workers on their way and ``waiting`` calls in its queue.

    ``limits_waiting`` is None for a pool without limits; with limits, it says whether calls wait on
    them now. A pool with limits grows one worker at a time, as long as no call waits on a limit:
    whether the waiting calls would wait on a limit too is known only once a worker runs one.
    """
    size = len(idle_for) + starting
    if waiting:
        wanted = max(0, min(waiting - starting, options.pool_size - size))
        if limits_waiting is not None:
            wanted = 0 if limits_waiting or starting else min(wanted, 1)
        return Step(wanted, [])
    spare = size - options.min_workers
    idle = sorted((i for i, t in idle_for.items() if t >= options.idle_timeout), key=lambda i: -idle_for[i])
    return Step(0, idle[: max(0, spare)])


class ScalingState:
    """A pool's scaling figures (workers being started, added and retired) and the next step.

    For a pool scaled from load reports (Ray), :meth:`idle_times` also keeps when each
    worker was last busy.
    """

    def __init__(self, options: Any) -> None:
        self.options = options
        self.starting = 0
        self.scaled_up = 0
        self.scaled_down = 0
        self._seen: dict[int, tuple[int, float]] = {}  # per worker: calls sent to it, and when it was last busy

    def step(self, idle_for: dict[int, float], waiting: int, limits_waiting: Optional[bool], joining: int = 0) -> Step:
        """The :func:`plan` for workers idle ``idle_for`` seconds, given the workers being started
        and ``joining`` more (started, not in ``idle_for``, but no call has reached them yet)."""
        return plan(idle_for, self.starting + joining, waiting, limits_waiting, self.options)

    def idle_times(self, loads: dict[int, tuple[int, int]]) -> dict[int, float]:
        """Per worker, seconds since it was last busy, from ``loads`` (index -> calls in flight,
        calls sent), read every tick: a worker is busy while it has calls in flight or gets new ones."""
        now = time.monotonic()
        seen = {}
        for index, (in_flight, sent) in loads.items():
            last = self._seen.get(index)
            seen[index] = (sent, now) if in_flight or last is None or last[0] != sent else last
        self._seen = seen
        return {index: now - last_busy for index, (_, last_busy) in seen.items()}

    def stats(self) -> dict:
        """The scaling figures ``get_pool_stats()`` reports."""
        return {"min_workers": self.options.min_workers, "scaled_up": self.scaled_up, "scaled_down": self.scaled_down}


class Autoscaler:
    """A daemon thread that applies :func:`plan` to a thread or process pool until it stops."""

    def __init__(self, dispatcher: Dispatcher, members: Any, options: Any, limits: Any) -> None:
        self.dispatcher = dispatcher
        self.members = members
        self.limits = limits
        self.state = ScalingState(options)
        self._lock = threading.Lock()  # guards the state's figures, changed by the threads that add workers
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="concurry-autoscale", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(TICK_SECONDS):
            try:
                self._tick()
            except Exception as exc:  # e.g. the pool's limits holder cannot be reached: try again later
                if not self._stopped.is_set():
                    log.warning("concurry_ray: scaling %s failed: %r", self.members.blueprint.label, exc)

    def _tick(self) -> None:
        waiting = self.dispatcher.queued()
        limits_waiting = limits_wait(self.limits) if waiting else None
        with self._lock:
            step = self.state.step(self.dispatcher.idle_times(), waiting, limits_waiting)
        if self._stopped.is_set():
            return
        for _ in range(step.grow):
            self._add_worker()
        if step.retire:
            retired = self.dispatcher.retire(step.retire)
            with self._lock:
                self.state.scaled_down += len(retired)
            self.members.retire(retired)

    def _add_worker(self) -> None:
        """Start one worker in a thread of its own, so that a slow one holds up neither the calls
        (they go to the others) nor the next workers."""
        with self._lock:
            self.state.starting += 1
        threading.Thread(target=self._start_one, name="concurry-autoscale-add", daemon=True).start()

    def _start_one(self) -> None:
        try:
            if not self._stopped.is_set():
                self.dispatcher.install_all(self.members.start(1))
                with self._lock:
                    self.state.scaled_up += 1
        except BaseException as exc:  # SystemExit too: a worker process may end while it starts
            if not self._stopped.is_set():
                log.warning("concurry_ray: %s could not add a worker: %r", self.members.blueprint.label, exc)
        finally:
            with self._lock:
                self.state.starting -= 1

    def stats(self) -> dict:
        """The scaling figures ``get_pool_stats()`` reports."""
        return self.state.stats()

    def stop(self) -> None:
        """Stop scaling (the pool is stopping)."""
        self._stopped.set()


def limits_wait(limits: Any) -> Optional[bool]:
    """Whether calls wait on ``limits`` now (then more workers would not help); None without limits."""
    if limits is None:
        return None
    return limits.get_stats().get("waiting", 0) > 0
