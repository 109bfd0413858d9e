"""Thread mode: each worker is one dedicated thread running calls in order."""

from __future__ import annotations

from queue import Empty, SimpleQueue
from threading import Thread
from typing import Optional

from concurry_ray.errors import WorkerInitError
from concurry_ray.futures import Future, seconds_left, settle
from concurry_ray.host import Host
from concurry_ray.protocol import Backend, Call, WorkerClient, WorkerSpec

from ._inflight import InFlight, cancel_each, deadline_passed, run_call

_STOP = object()


class ThreadClient(WorkerClient):
    """A worker living in its own thread; async methods run on its private event loop."""

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__()
        self.label = spec.label
        self.ready = Future()
        self._queue: SimpleQueue = SimpleQueue()
        self._async_calls = InFlight()
        self._deadline: Optional[float] = None
        self._alive = True  # a flag: Thread.is_alive() takes a lock, and alive() is on the dispatch path
        self._thread = Thread(target=self._main, args=(spec,), name=spec.label, daemon=True)
        self._thread.start()

    def submit(self, call: Call, future: Future) -> Future:
        self._queue.put((call, future))
        return future

    def alive(self) -> bool:
        return self._alive

    def _main(self, spec: WorkerSpec) -> None:
        try:
            host = Host(spec)
        except WorkerInitError as exc:
            self._alive = False
            self.ready.set_exception(exc)
            self._refuse(exc)
            return
        self._host = host
        self.ready.set_result(None)
        try:
            self._serve(host)
            self._async_calls.drain(self._deadline)
        finally:
            self._alive = False
            host.close()

    def _serve(self, host: Host) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            run_call(host, *item, self._async_calls)

    def _refuse(self, error: WorkerInitError) -> None:
        """Fail with ``error`` every call sent to this worker, whose constructor failed, until stop()."""
        while (item := self._queue.get()) is not _STOP:
            settle(item[1], error=error)

    def stop(self, deadline: Optional[float]) -> None:
        self._deadline = deadline
        self._queue.put(_STOP)
        self._thread.join(seconds_left(deadline))
        if self._thread.is_alive():
            self._cancel_queued()

    def _cancel_queued(self) -> None:
        queued = []
        while True:
            try:
                item = self._queue.get_nowait()
            except Empty:
                break
            if item is not _STOP:
                queued.append(item[1])
        cancel_each(queued, deadline_passed)
        self._queue.put(_STOP)


class ThreadBackend(Backend):
    """Workers as threads in this process."""

    name = "thread"
    on_demand_default_max_workers = 24

    def spawn(self, spec: WorkerSpec) -> WorkerClient:
        return ThreadClient(spec)
