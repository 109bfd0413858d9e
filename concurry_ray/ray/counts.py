"""Telling a pool's balancer that a worker's own counts changed since it last read them.

Every worker of a Ray pool counts the calls it completed and failed, and the
retries it made. ``get_pool_stats()`` reads those counts through the balancer,
which keeps the last counts it read from each worker and asks again only the
workers that told it they changed since. A worker tells it once per change of
state, not per call: with its first finished call after the balancer's last
read it sends one small message (before the call's reply leaves, so a read made
after a result arrived already knows), and nothing more until the balancer has
read its counts again. So a read of a quiet pool is one round trip whatever its
size, a read of a busy pool asks the workers that were busy, and a call costs a
flag check.
"""

from __future__ import annotations

import threading
from typing import Any


class ChangeNotice:
    """Sends ``balancer.worker_changed`` once after each read of this worker's counts, at the first change."""

    def __init__(self, balancer: Any, index: int, token: str) -> None:
        self._balancer = balancer
        self._index = index
        self._token = token  # tells this worker's messages from those of an earlier worker of the same index
        self._lock = threading.Lock()
        self._told = False

    def changed(self) -> None:
        """The counts changed: tell the balancer, unless it was told since it last read them."""
        if self._told:  # the common case, without the lock
            return
        with self._lock:
            if self._told:
                return
            self._told = True
        self._balancer.worker_changed.remote(self._index, self._token)

    def reading(self) -> None:
        """The balancer is reading the counts now (call before reading them): tell it of the next change."""
        with self._lock:
            self._told = False
