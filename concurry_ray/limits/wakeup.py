"""The ledger's alarm: call a function at the earliest time asked for.

The ledger uses it to grant a waiter the moment a rate limit lets it through, so
nobody polls. It keeps one entry on the library's timer thread
(:mod:`concurry_ray.timers`), replaced when an earlier time is asked for.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

from ..timers import Scheduled, call_at


class Alarm:
    """Calls ``action()`` (without any lock held) once the earliest requested time is reached.

    Times are read on ``clock``, the ledger's clock.
    """

    def __init__(self, action: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._action = action
        self._clock = clock
        self._lock = threading.Lock()
        self._due = math.inf
        self._entry: Optional[Scheduled] = None

    def at(self, when: float) -> None:
        """Make sure ``action`` runs at ``when`` (an earlier request wins)."""
        with self._lock:
            if when >= self._due:
                return
            if self._entry is not None:
                self._entry.cancel()
            self._due = when
            self._entry = call_at(time.monotonic() + (when - self._clock()), self._ring)

    def _ring(self) -> None:
        with self._lock:
            self._due, self._entry = math.inf, None
        self._action()
