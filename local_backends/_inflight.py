"""Bookkeeping shared by local clients: calls sent but not yet settled."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Optional

from concurry_ray.futures import seconds_left


class InFlight:
    """The futures of calls a client has accepted and not yet settled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: set = set()

    def add(self, future: cf.Future) -> None:
        """Track ``future`` until it settles."""
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._discard)

    def _discard(self, future: cf.Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def snapshot(self) -> list:
        """The futures still unsettled."""
        with self._lock:
            return list(self._futures)

    def drain(self, deadline: Optional[float]) -> None:
        """Wait for every tracked future until ``deadline``, then fail the rest with CancelledError.

        The worker's loop stops right after, so a call still running then could
        never deliver its outcome; its caller gets CancelledError instead.
        """
        pending = self.snapshot()
        _, not_done = cf.wait(pending, timeout=seconds_left(deadline))
        for future in not_done:
            if not future.cancel():
                _force_cancel(future)


def _force_cancel(future: cf.Future) -> None:
    """Cancel a future that is already running (its worker will no longer deliver)."""
    try:
        future.set_exception(cf.CancelledError("cancelled: stop() deadline passed before the call finished"))
    except cf.InvalidStateError:
        pass
