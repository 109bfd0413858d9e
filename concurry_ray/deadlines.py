"""Per-call deadlines (``call_timeout=``): fail a future that is still pending when its time is up."""

from __future__ import annotations

import time
from functools import partial

from .errors import CallTimeoutError
from .futures import Future, settle
from .timers import call_at


def expire_after(future: Future, seconds: float, what: str) -> None:
    """Fail ``future`` with CallTimeoutError if it is still pending after ``seconds``."""
    entry = call_at(time.monotonic() + seconds, partial(_expire, future, seconds, what))
    future.add_done_callback(lambda _: entry.cancel())  # a finished call leaves nothing behind


def _expire(future: Future, seconds: float, what: str) -> None:
    if not future.done():
        settle(future, error=CallTimeoutError(f"{what} did not finish within call_timeout={seconds}s"))
