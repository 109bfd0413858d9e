"""Pool-side crash retries: a call whose worker died may be sent to another worker.

Retries of a call that *raised* run inside the worker (``concurry_ray.retry``).
A worker that *died* cannot retry its own call; the pool re-sends it to another
worker when the method's ``retry_on`` names :class:`WorkerCrashedError`.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Any, Callable

from ..errors import WorkerCrashedError
from ..futures import Future, chain, settle
from ..retry import option_for


def crash_retries(options: Any, method_name: str) -> int:
    """How many times a call that failed with WorkerCrashedError may be sent to another worker.

    ``num_retries`` for that method when its ``retry_on`` names WorkerCrashedError
    (or a subclass); otherwise 0: a crash is never retried by default, since
    running a call again that may have killed its worker can kill the next one.
    """
    if options.num_retries == 0:
        return 0
    retry_on = option_for(options, "retry_on", method_name)
    if any(isinstance(rule, type) and issubclass(rule, WorkerCrashedError) for rule in retry_on):
        return option_for(options, "num_retries", method_name)
    return 0


def follow_crashes(first: cf.Future, resend: Callable[[], cf.Future], retries: int) -> Future:
    """A future with the outcome of ``first``, re-sending the call up to ``retries`` times on a crash.

    ``resend()`` dispatches the call again (to another worker) and returns its
    future; if it raises (the pool was stopped), that error is the outcome.
    """
    outer = Future()
    outer.set_running_or_notify_cancel()

    def follow(done: cf.Future, left: int) -> None:
        error = None if done.cancelled() else done.exception()
        if not isinstance(error, WorkerCrashedError) or left <= 0:
            chain(done, outer)
            return
        try:
            again = resend()
        except Exception as exc:
            settle(outer, error=exc)
            return
        again.add_done_callback(lambda f: follow(f, left - 1))

    first.add_done_callback(lambda f: follow(f, retries))
    return outer
