"""The condition variable inside every Future: ``threading.Condition``'s protocol on a C lock.

A ``concurrent.futures.Future`` guards its state with ``self._condition``: it
enters it with ``with`` on every state change, calls ``wait(timeout)`` in
``result()``/``exception()`` and ``notify_all()`` when it settles, and
``concurrent.futures.wait`` calls its ``acquire``/``release``. A
``threading.Condition`` is written in Python: building one costs about 0.6 µs
and each ``with`` runs two Python calls. Every call a worker runs creates one
future and enters its condition three or four times, so on a trivial call this
was a tenth of the whole dispatch cost. :class:`FutureCondition` is the C
re-entrant lock itself (``with``, ``acquire`` and ``release`` run in C) plus the
two waiting methods, written after ``threading.Condition``'s.
"""

from __future__ import annotations

import _thread
from collections import deque
from typing import Optional


class FutureCondition(_thread.RLock):
    """A re-entrant lock with ``wait``, ``notify`` and ``notify_all``, as ``threading.Condition(RLock())`` has.

    The list of waiting threads is created by the first ``wait``; most futures
    are settled before anybody waits on them and never need it.
    """

    _waiting: Optional[deque] = None  # set on the instance by the first wait()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Release the lock, block until notified or ``timeout`` passes, re-acquire; True if notified."""
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _thread.allocate_lock()
        waiter.acquire()
        waiting = self._waiters()
        waiting.append(waiter)
        saved = self._release_save()
        notified = False
        try:
            notified = waiter.acquire(True, -1 if timeout is None else max(timeout, 0))
            return notified
        finally:
            self._acquire_restore(saved)
            if not notified:
                try:
                    waiting.remove(waiter)
                except ValueError:
                    pass

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting threads (the lock must be held)."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        waiting = self._waiters()
        while waiting and n > 0:
            waiting.popleft().release()
            n -= 1

    def notify_all(self) -> None:
        """Wake every waiting thread (the lock must be held)."""
        if self._waiting:
            self.notify(len(self._waiting))

    def _waiters(self) -> deque:
        if self._waiting is None:
            self._waiting = deque()
        return self._waiting
