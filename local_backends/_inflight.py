"""What local clients share: running a call into its future, and the calls not yet settled."""

from __future__ import annotations

import concurrent.futures as cf
import threading
from typing import Callable, Iterable, Optional

from concurry_ray.futures import Future, chain, seconds_left, settle
from concurry_ray.host import Host
from concurry_ray.protocol import Call


def run_call(host: Host, call: Call, future: Future, in_flight: Optional["InFlight"] = None) -> None:
    """Run ``call`` on ``host`` and settle ``future`` with its outcome; nothing if ``future`` was cancelled first.

    A sync method runs here and now. An async one is scheduled on the host's
    event loop and settles ``future`` when it ends; ``in_flight``, when given,
    tracks it until then.
    """
    if not start(future):
        return
    if host.is_async(call.method):
        if in_flight is not None:
            in_flight.add(future)
        chain(host.run_on_loop(call), future)
        return
    try:
        settle(future, host.run(call))
    except BaseException as exc:
        settle(future, error=exc)


def start(future: Future) -> bool:
    """Mark ``future`` running; False if it was cancelled or settled already (its ``call_timeout``
    may pass while the call waits in a worker's queue), so the call is skipped."""
    try:
        return future.set_running_or_notify_cancel()
    except RuntimeError:  # settled already
        return False


def cancel_each(futures: Iterable[cf.Future], error: Callable[[], BaseException]) -> None:
    """Cancel every future; one already running (its outcome will never come) fails with ``error()`` instead."""
    for future in futures:
        if not future.cancel():
            settle(future, error=error())


def deadline_passed() -> cf.CancelledError:
    """The error of a call still running when its worker's ``stop()`` deadline passed."""
    return cf.CancelledError("cancelled: stop() deadline passed before the call finished")


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
        """Wait for every tracked future until ``deadline``, then cancel the rest.

        The worker's loop stops right after, so a call still running then could
        never deliver its outcome; its caller gets CancelledError instead.
        """
        _, not_done = cf.wait(self.snapshot(), timeout=seconds_left(deadline))
        cancel_each(not_done, deadline_passed)
