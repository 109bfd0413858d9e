"""Process mode: each worker is a child process reached through a pipe.

Messages are cloudpickled, so lambdas and classes defined in ``__main__`` or a
notebook travel. A reader thread per worker settles futures as results arrive;
when the pipe breaks because the child died, the call it was running fails at
once with :class:`WorkerCrashedError` and the calls it had not started yet are
handed back to the pool to run elsewhere.

Sync calls run one at a time in the order sent, so the first unsettled sync
call is the only one a dead child can have been running.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from functools import partial
from multiprocessing.connection import wait
from queue import SimpleQueue
from typing import Any, Optional

import cloudpickle

from concurry_ray.errors import SerializationError, WorkerCrashedError, WorkerInitError
from concurry_ray.futures import Future, cancelled, seconds_left, settle
from concurry_ray.host import rebuild_init_error, unpicklable_argument
from concurry_ray.protocol import Backend, Call, WorkerClient, WorkerSpec, split_on_crash

from . import _live
from ._child import child_main
from ._inflight import cancel_each

_STOP = b"\0"
log = logging.getLogger("concurry_ray")


class ProcessClient(WorkerClient):
    """Client of one worker process."""

    def __init__(self, spec: WorkerSpec, context: multiprocessing.context.BaseContext) -> None:
        super().__init__()
        self.label = spec.label
        self.ready = Future()
        self._outbox: SimpleQueue = SimpleQueue()
        self._pending: dict[int, tuple[Call, Future, bool]] = {}
        self._ids = iter(range(1, 1 << 62))
        self._stopping = False
        self._stop_lock = threading.Lock()
        self._exited = False
        self._retries = 0  # the host's retry count, sent with every reply
        self._cls = spec.cls
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=child_main, args=(child_conn, cloudpickle.dumps(spec)), name=spec.label, daemon=False
        )
        self._process.start()
        child_conn.close()
        _live.started(self)
        self._reader = threading.Thread(target=self._read, name=f"{spec.label}-reader", daemon=True)
        self._reader.start()
        self._writer = threading.Thread(target=self._write, name=f"{spec.label}-writer", daemon=True)
        self._writer.start()

    def pid(self) -> Optional[int]:
        return self._process.pid

    def retries(self) -> Optional[int]:
        return self._retries

    def submit(self, call: Call, future: Future) -> Future:
        try:
            payload = cloudpickle.dumps(call)
        except Exception as exc:
            future.set_exception(unpicklable_argument(call, exc, self.label))
            return future
        future.set_running_or_notify_cancel()
        call_id = next(self._ids)
        self._pending[call_id] = (call, future, self._is_async(call.method))
        if self._exited and self._pending.pop(call_id, None) is not None:  # its death was reported already
            settle(future, error=WorkerCrashedError(f"{self.label} died before {call.method}() was sent to it"))
            return future
        self._outbox.put(call_id.to_bytes(8, "little") + payload)
        return future

    def _write(self) -> None:
        """Send queued messages; a full pipe blocks this thread, never the caller (or a pool lock)."""
        while True:
            message = self._outbox.get()
            try:
                self._conn.send_bytes(message)
            except (OSError, ValueError):
                return  # the reader thread sees the broken pipe and fails the pending calls
            if message == _STOP:
                return

    def _read(self) -> None:
        """Settle ``ready``, then each call as its outcome arrives, until the pipe breaks.

        An outcome that cannot be unpickled fails its own call only. Should anything
        else go wrong here, the worker is killed, so its calls fail rather than hang.
        """
        try:
            failure = cloudpickle.loads(self._conn.recv_bytes())
            if failure is None:
                self.ready.set_result(None)
            else:
                message, type_name, cause = failure
                self.ready.set_exception(rebuild_init_error(message, self._unpickled(type_name, cause)[1]))
            while True:
                call_id, ok, type_name, payload, self._retries = cloudpickle.loads(self._conn.recv_bytes())
                loaded, value = self._unpickled(type_name, payload)
                _, future, _ = self._pending.pop(call_id)
                settle(future, value if ok and loaded else None, None if ok and loaded else value)
        except (EOFError, OSError):
            pass
        except BaseException:
            log.exception("concurry_ray: the reader of %s failed; killing the worker", self.label)
            self._process.kill()
        self._on_exit()

    def _unpickled(self, type_name: str, payload: bytes) -> tuple[bool, Any]:
        """``(True, value)`` of a pickled outcome, or ``(False, SerializationError)`` naming its type."""
        try:
            return True, cloudpickle.loads(payload)
        except Exception as exc:
            return False, SerializationError(
                f"a {type_name} sent by {self.label} cannot be unpickled in the caller's process "
                f"({type(exc).__name__}: {exc}); make it picklable (an exception must accept the "
                "arguments in its .args)"
            )

    def _on_exit(self) -> None:
        self._exited = True
        self._outbox.put(_STOP)  # ends the writer thread (a no-op if stop() already sent it)
        self._process.join(timeout=2)
        if not self.ready.done():
            settle(self.ready, error=WorkerInitError(
                f"{self.label} exited during start-up ({self._exit_text()}). If a script starts process "
                "workers at import time, put that code under `if __name__ == '__main__':` (the child "
                "process imports the main module, as with ProcessPoolExecutor); its stderr shows why."
            ))
        pending = [self._pending.pop(call_id) for call_id in sorted(self._pending)]
        if self._stopping:
            cancel_each((future for _, future, _ in pending), partial(cancelled, self.label))
            return
        init_error = self.ready.exception()
        if init_error is not None:  # no call started: they may wait for a worker that can be built
            self._died(init_error, [(call, future) for call, future, _ in pending])
            return
        crash = WorkerCrashedError(f"{self.label} (pid {self._process.pid}) {self._exit_text()}")
        self._died(crash, split_on_crash(pending, crash))

    def _exit_text(self) -> str:
        code = self._process.exitcode
        if code is None:
            return "stopped answering"
        if code < 0:
            return f"was killed by signal {signal.Signals(-code).name} (likely causes: kill -9, the OOM killer, a crash in native code)"
        return f"exited with code {code}"

    def alive(self) -> bool:
        return not self._exited and not self._stopping

    def stop(self, deadline: Optional[float]) -> None:
        """Let the worker finish its calls and exit; kill it at ``deadline``.

        A second stop (the pool's, after a resize started one without a deadline)
        brings the deadline forward: each kills the process at its own deadline.
        """
        with self._stop_lock:
            first, self._stopping = not self._stopping, True
        if first:
            self._outbox.put(_STOP)
        if not wait([self._process.sentinel], seconds_left(deadline)):
            self._process.kill()
        self._process.join()
        self._reader.join(timeout=5)  # it settles the calls left
        if first:
            self._writer.join(timeout=5)  # a write after close could land in a new pipe given the same fd
            self._conn.close()
            _live.stopped(self)

    def kill(self) -> None:
        """Kill the process at once (tests and health checks use it)."""
        os.kill(self._process.pid, signal.SIGKILL)


class ProcessBackend(Backend):
    """Workers as child processes (``mp_context`` chooses fork, forkserver or spawn)."""

    name = "process"
    on_demand_default_max_workers = 4
    crosses_process = True

    def __init__(self, options) -> None:
        super().__init__(options)
        self._context = multiprocessing.get_context(options.mp_context)

    def spawn(self, spec: WorkerSpec) -> WorkerClient:
        return ProcessClient(spec, self._context)
