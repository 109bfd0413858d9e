"""Retry policy applied by the host around every call (see issue: retries)."""

from __future__ import annotations

from typing import Any, Callable

from .protocol import Call


class RetryRunner:
    """Runs a bound method under the worker's retry options."""

    def __init__(self, options: Any, worker_class: type, limits: Any) -> None:
        self.options = options
        self.worker_class = worker_class
        self.limits = limits

    def run(self, call: Call, bound: Callable) -> Any:
        """Call ``bound`` with the call's arguments."""
        return bound(*call.args, **call.kwargs)

    async def run_async(self, call: Call, bound: Callable) -> Any:
        """Await ``bound`` with the call's arguments."""
        return await bound(*call.args, **call.kwargs)
