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
and applies it through the Dispatcher and the membership, as a resize does. In Ray
mode the figures include the load other handles report, and the handle that
created the pool does the scaling.
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


class Autoscaler:
    """A daemon thread that applies :func:`plan` to a pool until it stops."""

    def __init__(self, dispatcher: Dispatcher, members: Any, options: Any, limits: Any) -> None:
        self.dispatcher = dispatcher
        self.members = members
        self.options = options
        self.limits = limits
        self.scaled_up = 0
        self.scaled_down = 0
        self._starting = 0  # workers being started now
        self._lock = threading.Lock()
        self._others_seen: dict[int, tuple[int, float]] = {}  # per worker: other handles' total calls, and when it last changed
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
        limits_waiting = self._limits_waiting() if waiting else None
        step = plan(self._idle_times(), self._starting, waiting, limits_waiting, self.options)
        if self._stopped.is_set():
            return
        for _ in range(step.grow):
            self._add_worker()
        if step.retire:
            retired = self.dispatcher.retire(step.retire)
            self.scaled_down += len(retired)
            self.members.retire(retired)

    def _add_worker(self) -> None:
        """Start one worker in a thread of its own, so that one the cluster cannot place yet
        holds up neither the calls (they go to the others) nor the next workers."""
        with self._lock:
            self._starting += 1
        threading.Thread(target=self._start_one, name="concurry-autoscale-add", daemon=True).start()

    def _start_one(self) -> None:
        try:
            if not self._stopped.is_set():
                self.dispatcher.install_all(self.members.start(1))
                with self._lock:
                    self.scaled_up += 1
        except BaseException as exc:  # SystemExit too: Ray ends a call still waiting when it shuts down
            if not self._stopped.is_set():
                log.warning("concurry_ray: %s could not add a worker: %r", self.members.blueprint.label, exc)
        finally:
            with self._lock:
                self._starting -= 1

    def _idle_times(self) -> dict[int, float]:
        """This handle's idle times, shortened to the time since other handles last used each worker (Ray)."""
        idle_for, now = self.dispatcher.idle_times(), time.monotonic()
        for index, (in_flight, total) in self.members.others_load().items():
            if in_flight or total != self._others_seen.get(index, (total, now))[0]:
                self._others_seen[index] = (total, now)
            else:
                self._others_seen.setdefault(index, (total, now))
            if index in idle_for:
                idle_for[index] = min(idle_for[index], now - self._others_seen[index][1])
        return idle_for

    def _limits_waiting(self) -> Optional[bool]:
        """Whether calls of this pool wait on its limits (then more workers would not help); None without limits."""
        if self.limits is None:
            return None
        return self.limits.get_stats().get("waiting", 0) > 0

    def stats(self) -> dict:
        """The scaling figures ``get_pool_stats()`` reports."""
        return {"min_workers": self.options.min_workers, "scaled_up": self.scaled_up, "scaled_down": self.scaled_down}

    def stop(self) -> None:
        """Stop scaling (the pool is stopping)."""
        self._stopped.set()
