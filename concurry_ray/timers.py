"""The library's one timer thread: run a callback at a given time.

Call deadlines (``deadlines.py``) and the limits ledger's alarm
(``limits/wakeup.py``) schedule here. A single daemon thread sleeps until the
earliest entry of a heap and wakes early only when an earlier entry arrives, so
nothing polls. Callbacks run on that thread one at a time, with no lock held:
they must be quick. One that raises is logged and the thread carries on; a
long delay (``call_timeout=1e10``) is waited out a day at a time, as no
operating system waits that long in one go.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from typing import Callable, Optional

log = logging.getLogger("concurry_ray")

Callback = Callable[[], None]
LONGEST_WAIT = 86400.0  # seconds the thread sleeps at most in one wait


class Scheduled:
    """A callback waiting for its time, as :func:`call_at` returns it."""

    __slots__ = ("callback", "_timers")

    def __init__(self, callback: Callback, timers: "_Timers") -> None:
        self.callback: Optional[Callback] = callback  # None once it ran or was cancelled
        self._timers = timers

    def cancel(self) -> None:
        """Make sure the callback does not run (nothing happens if it ran already)."""
        self._timers.cancel(self)


class _Timers:
    """The heap of entries and the thread that serves it (started on first use)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Scheduled]] = []
        self._order = itertools.count()
        self._cancelled = 0  # entries in the heap whose callback is None
        self._thread: Optional[threading.Thread] = None

    def call_at(self, when: float, callback: Callback) -> Scheduled:
        """Add an entry; wake the thread if it is now the earliest."""
        entry = Scheduled(callback, self)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), entry))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="concurry-timers", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is entry:
                self._cond.notify()
        return entry

    def cancel(self, entry: Scheduled) -> None:
        """Mark an entry dead; the heap drops it when it comes first, or all dead ones at once when they are many."""
        with self._cond:
            if entry.callback is None:
                return
            entry.callback = None
            self._cancelled += 1
            if self._cancelled > len(self._heap) // 2:  # drop the dead entries before they pile up
                self._heap = [item for item in self._heap if item[2].callback is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            callback = self._next_due()
            try:
                callback()
            except BaseException:  # the other entries still need the thread
                log.exception("concurry_ray: a timer callback failed")

    def _next_due(self) -> Callback:
        """Wait until the earliest live entry is due, take it off the heap and return its callback."""
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].callback is None:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._cond.wait()
                    continue
                remaining = self._heap[0][0] - time.monotonic()
                if remaining <= 0:
                    entry = heapq.heappop(self._heap)[2]
                    callback, entry.callback = entry.callback, None
                    return callback
                self._cond.wait(min(remaining, LONGEST_WAIT))

    def pending(self) -> int:
        """How many entries wait for their time (cancelled ones not counted)."""
        with self._cond:
            return len(self._heap) - self._cancelled


_TIMERS = _Timers()


def call_at(when: float, callback: Callback) -> Scheduled:
    """Run ``callback()`` on the timer thread once ``time.monotonic()`` reaches ``when``."""
    return _TIMERS.call_at(when, callback)


def pending() -> int:
    """How many callbacks (call deadlines, limits alarms) wait for their time; cancelled ones are not counted."""
    return _TIMERS.pending()


def _after_fork() -> None:
    """A forked child has none of the parent's threads: start afresh there."""
    global _TIMERS
    _TIMERS = _Timers()


os.register_at_fork(after_in_child=_after_fork)
