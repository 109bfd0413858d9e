"""A one-thread alarm clock: call a function at the earliest time asked for.

The ledger uses it to grant a waiter the moment a rate limit lets it through, so
nobody polls. The thread exists only while an alarm is set and ends when none is.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

log = logging.getLogger("concurry_ray")


class Alarm:
    """Calls ``action()`` (without any lock held) once the earliest requested time is reached."""

    def __init__(self, action: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._action = action
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._due = math.inf
        self._thread: threading.Thread | None = None

    def at(self, when: float) -> None:
        """Make sure ``action`` runs at ``when`` (an earlier request wins)."""
        with self._cond:
            if when >= self._due:
                return
            self._due = when
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="concurry-limits-alarm", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._due == math.inf:
                        self._thread = None
                        return
                    remaining = self._due - self._clock()
                    if remaining <= 0:
                        self._due = math.inf
                        break
                    self._cond.wait(remaining)
            try:
                self._action()
            except Exception:  # keep the alarm alive for the other waiters, and say what broke
                log.exception("concurry_ray: limits alarm action failed")
