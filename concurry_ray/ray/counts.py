"""A pool worker's own counts, sent to its pool's balancer as they change.

Every worker of a Ray pool counts the calls it completed and failed, and the
retries it made, and sends them to the balancer, so that ``get_pool_stats()``
reads them there instead of asking every worker: a read costs one round trip
whatever the pool's size, plus one to each worker that sent counts in the last
``HOT_SECONDS`` (more may be on their way from it, so the balancer asks it).
Sending is cheap and never waits:

- after a quiet spell the counts go at once, before the call's reply leaves, so
  a read made after a result arrived already sees it;
- in a run of calls they go at most every ``PUSH_SECONDS`` (the last change
  always goes);
- a new retry always goes at once (retries are rare, and a read right after a
  retried call should show it).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

PUSH_SECONDS = 0.2
"""The shortest time between two sends of one worker's counts during a run of calls."""
HOT_SECONDS = PUSH_SECONDS + 0.1
"""Counts sent longer ago than this are current: any later change would have been sent since."""

Counts = tuple[int, int, int]  # calls completed, calls failed, retries made


class CountsPusher:
    """Sends one worker's counts to its balancer (``balancer.worker_counts``), throttled."""

    def __init__(self, balancer: Any, index: int, token: str, read: Callable[[], Counts]) -> None:
        self._balancer = balancer
        self._index = index
        self._token = token  # tells this worker's counts from those of an earlier worker of the same index
        self._read = read
        self._lock = threading.Lock()
        self._last_sent = float("-inf")
        self._sent_retries = -1
        self._due = False  # a send is scheduled

    def send_now(self) -> None:
        """Send the counts now, without starting a pause (the first send, when the worker joins)."""
        self._send(self._read())

    def changed(self) -> None:
        """The counts changed: send them now, or schedule one send for the end of the pause."""
        counts = self._read()
        with self._lock:
            if self._due and counts[2] == self._sent_retries:
                return
            pause = self._last_sent + PUSH_SECONDS - time.monotonic()
            if pause > 0 and counts[2] == self._sent_retries:
                self._due = True
                timer = threading.Timer(pause, self._send_due)
                timer.daemon = True
                timer.start()
                return
            self._mark_sent(counts)
        self._send(counts)

    def _send_due(self) -> None:
        counts = self._read()
        with self._lock:
            self._due = False
            self._mark_sent(counts)
        self._send(counts)

    def _mark_sent(self, counts: Counts) -> None:
        self._last_sent = time.monotonic()
        self._sent_retries = counts[2]

    def _send(self, counts: Counts) -> None:
        self._balancer.worker_counts.remote(self._index, self._token, counts)
