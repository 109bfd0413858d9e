"""Asyncio mode: the worker lives on one event loop thread.

Async methods run concurrently as tasks on that loop; sync methods run on the
loop thread one at a time, in order, as calls on an actor do.
"""

from __future__ import annotations

from typing import Optional

from concurry_ray.errors import WorkerInitError
from concurry_ray.futures import Future
from concurry_ray.host import Host, LoopThread
from concurry_ray.protocol import Backend, Call, WorkerClient, WorkerSpec

from ._inflight import InFlight, run_call


class AsyncioClient(WorkerClient):
    """A worker whose every call runs on its own event loop."""

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__()
        self.label = spec.label
        self._loop_thread = LoopThread(f"{spec.label}-loop")
        self._loop = self._loop_thread.loop
        self._calls = InFlight()
        self._host: Optional[Host] = None
        self._stopped = False
        self.ready = Future()
        self._loop.call_soon_threadsafe(self._build, spec)

    def _build(self, spec: WorkerSpec) -> None:
        try:
            self._host = Host(spec, loop=self._loop)
        except WorkerInitError as exc:
            self.ready.set_exception(exc)
            return
        self.ready.set_result(None)

    def submit(self, call: Call, future: Future) -> Future:
        self._calls.add(future)
        self._loop.call_soon_threadsafe(self._start, call, future)
        return future

    def _start(self, call: Call, future: Future) -> None:
        run_call(self._host, call, future)  # every call is in self._calls already

    def alive(self) -> bool:
        return not self._stopped

    def stop(self, deadline: Optional[float]) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._calls.drain(deadline)
        self._loop_thread.stop()


class AsyncioBackend(Backend):
    """One worker on one event loop."""

    name = "asyncio"
    supports_pools = False

    def spawn(self, spec: WorkerSpec) -> WorkerClient:
        return AsyncioClient(spec)
