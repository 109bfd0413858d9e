"""The worker processes this process started and has not stopped yet.

Worker processes are not daemonic (so a worker may start its own process pool).
At interpreter exit, and when a worker process ends, the workers nobody stopped
are stopped here before multiprocessing joins them.
"""

from __future__ import annotations

import atexit
import multiprocessing.util  # registers its atexit join first, so ours (below) runs before it
import time
import weakref
from typing import Any

_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()


def started(client: Any) -> None:
    """Remember a process worker's client until :func:`stopped`."""
    _LIVE.add(client)


def stopped(client: Any) -> None:
    """Forget a client whose worker process was stopped."""
    _LIVE.discard(client)


def count() -> int:
    """How many process workers this process started and has not stopped yet."""
    return len(_LIVE)


@atexit.register
def close_forgotten_workers() -> None:
    """Stop (within a few seconds) process workers that were never stopped."""
    deadline = time.monotonic() + 5
    for client in list(_LIVE):
        client.stop(deadline)
