"""Per-call deadlines (``call_timeout=``): one timer thread fails futures that run too long."""

from __future__ import annotations

import heapq
import itertools
import threading
import time

from .errors import CallTimeoutError
from .futures import Future, settle


class _Deadlines:
    """A heap of (deadline, future) served by one daemon thread that sleeps until the earliest."""

    def __init__(self) -> None:
        self._heap: list = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._thread = None

    def add(self, future: Future, seconds: float, what: str) -> None:
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._seq), future, seconds, what))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="concurry-deadlines", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, future, seconds, what = heapq.heappop(self._heap)
            if not future.done():
                settle(future, error=CallTimeoutError(f"{what} did not finish within call_timeout={seconds}s"))


_DEADLINES = _Deadlines()


def expire_after(future: Future, seconds: float, what: str) -> None:
    """Fail ``future`` with CallTimeoutError if it is still pending after ``seconds``."""
    _DEADLINES.add(future, seconds, what)
