"""Sync mode: calls run in the caller's thread at submit time.

Async methods still run concurrently, on the worker's own event loop thread, so
``async def`` behaves the same as in every other mode.
"""

from __future__ import annotations

from typing import Optional

from concurry_ray.futures import Future
from concurry_ray.host import Host
from concurry_ray.protocol import Backend, Call, WorkerClient, WorkerSpec

from ._inflight import InFlight, run_call


class SyncClient(WorkerClient):
    """A worker that runs each sync call inline in the submitting thread."""

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__()
        self.label = spec.label
        self.ready = Future()
        self._async_calls = InFlight()
        self._stopped = False
        try:
            self._host = Host(spec)
        except BaseException as exc:
            self.ready.set_exception(exc)
            self._stopped = True
            return
        self.ready.set_result(None)

    def submit(self, call: Call, future: Future) -> Future:
        run_call(self._host, call, future, self._async_calls)
        return future

    def alive(self) -> bool:
        return not self._stopped

    def stop(self, deadline: Optional[float]) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._async_calls.drain(deadline)
        self._host.close()


class SyncBackend(Backend):
    """One worker, run in the caller's thread."""

    name = "sync"
    supports_pools = False

    def spawn(self, spec: WorkerSpec) -> WorkerClient:
        return SyncClient(spec)
