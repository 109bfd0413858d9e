"""Ray mode: each worker is a Ray actor generated for the user's class."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import itertools
import threading
import uuid
from collections import deque
from typing import Any, Optional

import ray

from ..errors import ConfigError, WorkerCrashedError
from ..futures import Future, cancelled, seconds_left, settle
from ..host import rebuild_init_error, unpicklable_argument
from ..methods import has_async_methods
from ..nested import collect_arguments
from ..protocol import Backend, Call, WorkerClient, WorkerSpec
from .actor import Failed, InStore, start_actor, wire_kwargs
from .outcomes import ensure_ray, future_from_ref, stored_value, unwrap_ray_error, when_done

DEFAULT_ACTOR_OPTIONS = {"num_cpus": 1}
ASYNC = 0  # the task number of an async call: it runs beside the others, never in turn
TASKS_IN_FLIGHT = 2
"""Ray tasks of sync calls a client keeps in flight per actor (one running, one queued behind it);
calls made meanwhile wait in the client and go as one batch task when one finishes. Async calls on
an asyncio actor run side by side, so they are sent at once and not counted."""
MAX_BATCH = 256
"""The most calls one batch task carries."""


class RayClient(WorkerClient):
    """Client of one worker actor; calls go straight to the actor."""

    def __init__(self, actor: Any, cls: type, label: str, owner: bool = True) -> None:
        super().__init__()
        self.label = label
        self.actor = actor
        self.owner = owner
        self._lock = threading.Lock()
        # call id -> (call, future, task): the number of the Ray task that carries it (alone or in a
        # batch), ASYNC for an async method, None while it waits here; see _split_on_crash
        self._pending: dict[int, tuple[Call, Future, Optional[int]]] = {}
        self._task_numbers = itertools.count(ASYNC + 1)
        self._methods: dict[str, Any] = {}
        self._send_lock = threading.RLock()  # keeps the send order of queued and direct calls
        self._queue: deque = deque()  # (call_id, call, future, goes alone) not sent yet
        self._tasks = 0  # Ray tasks sent and not finished
        self._batch_method = actor.__concurry_batch__
        self._ids = iter(range(1, 1 << 62))
        self._cls = cls
        self._async_actor = has_async_methods(cls)
        self._sender = uuid.uuid4().hex
        self._seq = 0
        self._dead = False
        self._stopping = False
        self._pid: Optional[int] = None
        self._retries: Optional[int] = None  # last known; a dead actor cannot be asked
        self._retries_asked: Optional[ray.ObjectRef] = None  # the answer to ask_retries(), not read yet
        self.ready = Future()
        future_from_ref(actor.__concurry_ready__.remote(), label).add_done_callback(self._on_ready)

    def _on_ready(self, ready: Future) -> None:
        error = ready.exception()
        if error is None and ready.result() is not None:
            error = rebuild_init_error(*ready.result())
        settle(self.ready, None, error)

    def pid(self) -> Optional[int]:
        if self._pid is None:
            self._pid = ray.get(self.actor.__concurry_pid__.remote(), timeout=30)
        return self._pid

    def retries(self) -> Optional[int]:
        if not (self._dead or self._stopping):
            self._ask_retries()
        return self._retries

    def ask_retries(self) -> None:
        if not (self._dead or self._stopping):
            self._retries_asked = self.actor.__concurry_retries__.remote()

    def _ask_retries(self) -> None:
        asked, self._retries_asked = self._retries_asked, None
        if asked is None:
            asked = self.actor.__concurry_retries__.remote()
        try:
            self._retries = ray.get(asked, timeout=10)
        except ray.exceptions.RayError:
            pass  # keep the last known count

    def submit(self, call: Call, future: Future) -> Future:
        if self._async_actor and self._is_async(call.method):  # runs concurrently on the actor's loop
            if self._dead:  # sent anyway, it would fail like any call to a dead actor
                return self._refuse(call, future)
            self._send_started(next(self._ids), call, future)
            return future
        alone = _has_refs(call)  # Ray resolves (and waits for) refs only as direct arguments of one call
        with self._send_lock:
            # Under the lock that _on_crash holds while it empties the queue: a call queued after that
            # would wait forever.
            if self._dead:
                return self._refuse(call, future)
            call_id = next(self._ids)
            if not self._queue and (alone or self._tasks < TASKS_IN_FLIGHT):  # what _flush would do, minus the queue
                self._send_started(call_id, call, future)
                return future
            self._pending[call_id] = (call, future, None)
            self._queue.append((call_id, call, future, alone))
            if alone:
                self._flush_all()
            elif self._tasks < TASKS_IN_FLIGHT:
                self._flush()
        return future

    def _refuse(self, call: Call, future: Future) -> Future:
        """Fail ``call`` at once: this worker's death was reported already (nobody would hear of it)."""
        settle(future, error=WorkerCrashedError(f"{self.label} died before {call.method}() was sent to it"))
        return future

    def _flush_all(self) -> None:
        """Send every queued call, each with refs on its own (send lock held)."""
        while self._queue:
            self._flush()

    def _flush(self) -> None:
        """Send queued calls: one alone, or up to MAX_BATCH as one task (send lock held)."""
        batch: list = []
        while self._queue and len(batch) < MAX_BATCH:
            call_id, call, future, alone = entry = self._queue.popleft()
            if alone and batch:
                self._queue.appendleft(entry)
                break
            if not _start(future):
                self._pending.pop(call_id, None)
                continue
            batch.append((call_id, call, future))
            if alone:
                break
        if len(batch) == 1:
            self._send_one(*batch[0])
        elif batch:
            self._send_batch(batch)

    def _send_started(self, call_id: int, call: Call, future: Future) -> None:
        """Send one call now, unless it was cancelled (or settled by stop's deadline) meanwhile."""
        if _start(future):
            self._send_one(call_id, call, future)

    def _send_one(self, call_id: int, call: Call, future: Future) -> None:
        try:
            receipt, stored = self._send(call)
        except Exception as exc:  # the call fails, never the sender (it may be Ray's callback thread)
            self._pending.pop(call_id, None)
            if isinstance(exc, TypeError) and "serialize" in str(exc):
                exc = unpicklable_argument(call, str(exc).splitlines()[0], self.label)
            settle(future, error=exc)
            return
        future.native = stored
        is_async = self._async_actor and self._is_async(call.method)
        self._pending[call_id] = (call, future, ASYNC if is_async else next(self._task_numbers))
        if is_async:  # it runs beside the others on the actor's loop, so it takes no place in the window
            when_done(receipt, functools.partial(self._complete, call_id))
            return
        self._tasks += 1
        when_done(receipt, functools.partial(self._one_done, call_id))

    def _send_batch(self, batch: list) -> None:
        calls = [tuple(call) for _, call, _ in batch]
        method = self._batch_method.options(num_returns=len(batch) + 1)
        try:
            refs = self._in_order(method, (calls,)) if self._async_actor else method.remote(calls)
        except Exception:
            for entry in batch:  # one at a time: only the call at fault fails (e.g. cannot be pickled)
                self._send_one(*entry)
            return
        task = next(self._task_numbers)
        for (call_id, call, future), stored in zip(batch, refs[1:]):
            future.native = stored
            self._pending[call_id] = (call, future, task)
        self._tasks += 1
        when_done(refs[0], functools.partial(self._batch_done, [call_id for call_id, _, _ in batch]))

    def _one_done(self, call_id: int, value: Any, error: Optional[BaseException]) -> None:
        self._complete(call_id, value, error)
        self._task_done()

    def _batch_done(self, call_ids: list, receipts: Any, error: Optional[BaseException]) -> None:
        for call_id, receipt in zip(call_ids, receipts if error is None else [None] * len(call_ids)):
            if type(receipt) is Failed:
                self._complete(call_id, None, receipt.error, unwrap=False)
            else:
                self._complete(call_id, receipt, error)
        self._task_done()

    def _task_done(self) -> None:
        """A task finished: send what queued up meanwhile."""
        with self._send_lock:
            self._tasks -= 1
            if self._queue and not self._dead:
                self._flush()

    def _send(self, call: Call) -> Any:
        method = self._methods.get(call.method)
        if method is None:  # the handle builds a new ActorMethod on every attribute access
            method = self._methods[call.method] = getattr(self.actor, call.method)
        kwargs = wire_kwargs(call)
        if not self._async_actor:
            return method.remote(*call.args, **kwargs)
        if self._is_async(call.method):
            return method.remote(None, *call.args, **kwargs)
        return self._in_order(method, call.args, kwargs)

    def _in_order(self, method: Any, args: tuple, kwargs: Optional[dict] = None) -> Any:
        """Send a sync call (or batch) to an asyncio actor with the next ticket of this sender,
        so the actor runs them in the order they were sent."""
        with self._lock:
            seq = self._seq + 1
            refs = method.remote((self._sender, seq), *args, **(kwargs or {}))
            self._seq = seq
            return refs

    def _complete(self, call_id: int, value: Any, error: Optional[BaseException], unwrap: bool = True) -> None:
        entry = self._pending.pop(call_id, None)
        if entry is None:
            return  # already failed or handed back because the actor died
        if error is None:
            future = entry[1]
            settle(future, stored_value(future.native, self.label) if type(value) is InStore else value)
            return
        if unwrap:
            when_done(entry[1].native, _ignore)  # reads the error stored for the value too, so Ray does not report it unhandled
            error = unwrap_ray_error(error, self.label)
        if isinstance(error, WorkerCrashedError) and not self._stopping:
            self._pending[call_id] = entry
            if self._on_crash(error):
                return
            self._pending.pop(call_id, None)  # its death was handled before this call came back
        settle(entry[1], error=error)

    def _on_crash(self, error: WorkerCrashedError) -> bool:
        """Report the death once, with every call still pending; False if it was reported already."""
        with self._send_lock, self._lock:
            if self._dead:
                return False
            self._dead = True
            self._queue.clear()
            popped = [self._pending.pop(call_id, None) for call_id in sorted(self._pending)]
        pending = [entry for entry in popped if entry is not None]  # a callback may settle one meanwhile
        self._died(error, _split_on_crash(pending, error))
        return True

    def alive(self) -> bool:
        return not self._dead and not self._stopping

    def drain(self, deadline: Optional[float]) -> None:
        """Wait for this client's calls until ``deadline``; cancel those still pending then."""
        pending = [entry[1] for entry in list(self._pending.values())]
        _, not_done = cf.wait(pending, timeout=seconds_left(deadline))
        for future in not_done:
            settle(future, error=cancelled(self.label))

    def stop(self, deadline: Optional[float]) -> None:
        """Drain, then kill the actor if this client owns it (a copy of a pool handle only drains)."""
        if self._stopping:
            return
        self._stopping = True
        self.drain(deadline)
        if self.owner:
            self._ask_retries()  # the final count, while the actor can still answer
            ray.kill(self.actor, no_restart=True)

    def kill(self) -> None:
        """Kill the actor at once (tests and health checks use it)."""
        ray.kill(self.actor, no_restart=True)


def _ignore(value: Any, error: Optional[BaseException]) -> None:
    return None


def _start(future: Future) -> bool:
    """Mark a future running; False if it was cancelled or already settled (by stop's deadline)."""
    try:
        return future.set_running_or_notify_cancel()
    except RuntimeError:
        return False


def _has_refs(call: Call) -> bool:
    """Whether ``call`` has ObjectRef arguments (nested ones included)."""
    return bool(collect_arguments(call.args, call.kwargs, _is_ref))


def _split_on_crash(pending: list, crash: WorkerCrashedError) -> list:
    """Fail the calls a dead actor may have run; return the (call, future) pairs it never started.

    Every call sent to the actor may have started, not only the oldest task's: the
    actor runs the next task as soon as one ends, and the reply of the one that ended
    can be lost with the actor (or reach this process after the death does). Async
    calls start on arrival. So all of them fail, and only the calls still waiting in
    this client are handed back: no call runs twice unless ``retry_on`` names
    ``WorkerCrashedError``. The client keeps at most ``TASKS_IN_FLIGHT`` tasks sent.
    """
    oldest = min((task for _, _, task in pending if task is not None and task != ASYNC), default=None)
    unstarted = []
    for call, future, task in pending:
        if task is None:
            unstarted.append((call, future))
        elif task in (ASYNC, oldest):
            settle(future, error=type(crash)(f"{crash} while running {call.method}()"))
        else:
            settle(future, error=type(crash)(
                f"{crash} after {call.method}() was sent to it; it may have started, so it is not run again"))
    return unstarted


def _is_ref(value: Any) -> bool:
    return isinstance(value, ray.ObjectRef)


class RayBackend(Backend):
    """Workers as Ray actors; starts a local Ray runtime when none is initialised."""

    name = "ray"
    on_demand_default_max_workers = 0
    crosses_process = True
    supports_detached = True

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        ensure_ray()
        self.check_options(options)
        self.actor_options = {**DEFAULT_ACTOR_OPTIONS, **options.actor_options}

    @classmethod
    def check_options(cls, options: Any) -> None:
        """ConfigError if an actor asks for more CPUs or GPUs than the running cluster has in all
        (it could never be scheduled); nothing to check before Ray is up. Custom resources are
        not checked: nodes that have them may join later."""
        if not ray.is_initialized():
            return
        asked = {**DEFAULT_ACTOR_OPTIONS, **options.actor_options}
        total = ray.cluster_resources()
        for field, resource in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            amount = asked.get(field)
            if isinstance(amount, (int, float)) and amount > total.get(resource, 0):
                raise ConfigError(
                    f"actor_options {field}={amount!r}: the Ray cluster has {total.get(resource, 0):g} {resource} "
                    "in all, so this worker could never be scheduled; ask for less or add nodes"
                )

    def spawn(self, spec: WorkerSpec) -> WorkerClient:
        return RayClient(start_actor(spec, self.actor_options), spec.cls, spec.label)

    def passes_natively(self, value: Any) -> bool:
        return isinstance(value, ray.ObjectRef) or isinstance(getattr(value, "native", None), ray.ObjectRef)

    def native_form(self, value: Any) -> Any:
        return value if isinstance(value, ray.ObjectRef) else value.native
