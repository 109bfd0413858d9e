"""The Ray actor that hosts any user class.

For each user class one actor class is generated whose methods mirror the
class's public methods, so a call travels as ``actor.method.remote(*args,
**kwargs)`` exactly as a hand-written Ray actor call would (no extra envelope to
serialise). Each method returns two objects, a receipt and the value (see
:func:`_reply`), so the caller can learn that a call finished without fetching a
large result. A class with any ``async def`` method gets an asyncio actor (see
:class:`_AsyncHostActorBase`); any other class gets a plain single-threaded
actor, which runs calls in the order each caller sent them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

import cloudpickle
import ray

from ..errors import WorkerInitError
from ..host import Host, init_failure, portable_error
from ..methods import has_async_methods, public_methods
from ..nested import collect, replace
from ..protocol import Call, WorkerSpec
from .counts import ChangeNotice
from .naming import NAMESPACE

_ACTOR_CLASSES: dict[type, Any] = {}
NAME_ATTEMPTS = 20
TRACE_KEYWORD = "__concurry_trace__"
"""The keyword under which a traced call's W3C trace context travels to a generated actor method
(batch tasks carry it as the fourth item of each call)."""


class _HostActorBase:
    """State and helpers shared by every generated actor class."""

    def __init__(self, spec: WorkerSpec) -> None:
        self._where = f"{spec.label}, Ray actor pid {os.getpid()}"
        self._failure: Optional[tuple] = None
        self._host: Optional[Host] = None
        self._finished = [0, 0]  # calls completed, calls failed: counted here, before the reply leaves
        self._count_lock = threading.Lock()  # sync calls finish on one thread, async ones on the loop
        self._notice: Optional[ChangeNotice] = None  # set for a worker of a pool (not a single worker)
        try:
            self._host = Host(spec, loop=_running_loop())
        except WorkerInitError as exc:
            self._failure = init_failure(exc, self._where, cloudpickle.dumps)

    def __concurry_ready__(self) -> Optional[tuple]:
        return self._failure

    def __concurry_pid__(self) -> int:
        return os.getpid()

    @ray.method(concurrency_group="control")
    def __concurry_retries__(self) -> int:
        return self._retry_count()

    @ray.method(concurrency_group="control")
    def __concurry_counts__(self) -> tuple[int, int, int]:
        return self._read_counts()

    @ray.method(concurrency_group="control")
    def __concurry_report_to__(self, balancer: Any, index: int, token: str) -> None:
        self._report_to(balancer, index, token)

    def _report_to(self, balancer: Any, index: int, token: str) -> None:
        """From now on tell the pool's ``balancer`` when this worker's counts change; tell it once
        now, so that this process has found the balancer before the first call finishes."""
        self._notice = ChangeNotice(balancer, index, token)
        self._notice.changed()

    def _count(self, outcome: int) -> None:
        """Count one finished call: ``outcome`` 0 for completed, 1 for failed."""
        with self._count_lock:
            self._finished[outcome] += 1
        if self._notice is not None:
            self._notice.changed()

    def _retry_count(self) -> int:
        return self._host.retries if self._host is not None else 0

    def _read_counts(self) -> tuple[int, int, int]:
        """Calls completed, calls failed, and retries made, as the pool's balancer reads them."""
        if self._notice is not None:
            self._notice.reading()
        return self._finished[0], self._finished[1], self._retry_count()

    def _run(self, name: str, args: tuple, kwargs: dict) -> tuple:
        carrier = kwargs.pop(TRACE_KEYWORD, None)
        receipt, value = self._attempt(functools.partial(_resolved_call, name, args, kwargs, carrier))
        if type(receipt) is Failed:
            raise receipt.error
        return receipt, value

    def __concurry_batch__(self, calls: list) -> list:
        """Run several sync calls in order, as one Ray task (the client batches calls that queue up).

        Returns ``[receipts, value, value, ...]`` (the caller sets ``num_returns``
        to one more than the number of calls). A call that raised has a
        :class:`Failed` receipt and value; the calls after it still run. A name
        that is not a public method of the class (a private one, say) fails its
        call with AttributeError: the host refuses it, whoever sent the batch.
        """
        return _batch_reply([self._attempt(functools.partial(_resolved_call, *call)) for call in calls])

    def _attempt(self, prepare: Callable[[], Call]) -> tuple:
        """The two returns of the call ``prepare()`` gives, or a :class:`Failed` pair if preparing or running it raised."""
        try:
            reply = _reply(self._host.run(prepare()))
        except BaseException as exc:
            self._count(1)
            failed = Failed(portable_error(exc, self._where, cloudpickle.dumps))
            return failed, failed
        self._count(0)
        return reply


class _AsyncHostActorBase(_HostActorBase):
    """Base of actors for classes with ``async def`` methods (Ray runs them as asyncio actors).

    Async methods run concurrently on the actor's event loop. Sync methods run one
    at a time, in the order each sender sent them, on one dedicated thread, so a
    long sync call never stalls the loop (nor the replies of finished calls).
    """

    def __init__(self, spec: WorkerSpec) -> None:
        super().__init__(spec)
        self._sync_thread = ThreadPoolExecutor(1, thread_name_prefix="concurry-sync")
        self._order = asyncio.Condition()
        self._next_seq: dict[str, int] = {}

    async def __concurry_retries__(self) -> int:  # on the loop: answers while sync calls run
        return self._retry_count()

    async def __concurry_counts__(self) -> tuple[int, int, int]:  # on the loop: answers while sync calls run
        return self._read_counts()

    async def __concurry_report_to__(self, balancer: Any, index: int, token: str) -> None:
        self._report_to(balancer, index, token)

    async def __concurry_batch__(self, ticket: tuple, calls: list) -> list:
        """Run several sync calls in order on the sync thread, in the sender's turn (see the base class)."""
        prepared = []
        for name, args, kwargs, carrier in calls:
            try:
                prepared.append(Call(name, await _resolve_async(args), await _resolve_async(kwargs), carrier))
            except BaseException as exc:
                prepared.append(exc)
        return _batch_reply(await self._in_turn(ticket, functools.partial(self._run_prepared, prepared)))

    def _run_prepared(self, prepared: list) -> list:
        """On the sync thread: each call's two returns, or a Failed pair (also for arguments that failed)."""
        return [self._attempt(functools.partial(_call_or_raise, item)) for item in prepared]

    async def _run_async(self, name: str, ticket: Optional[tuple], args: tuple, kwargs: dict) -> Any:
        try:
            reply = await self._reply_of(name, ticket, args, kwargs)
        except BaseException as exc:
            self._count(1)
            raise portable_error(exc, self._where, cloudpickle.dumps) from None
        self._count(0)
        return reply

    async def _reply_of(self, name: str, ticket: Optional[tuple], args: tuple, kwargs: dict) -> Any:
        carrier = kwargs.pop(TRACE_KEYWORD, None)
        try:
            call = Call(name, await _resolve_async(args), await _resolve_async(kwargs), carrier)
        except BaseException:
            if ticket is not None:
                await self._in_turn(ticket, None)  # give up this call's turn, so later ones still run
            raise
        if self._host.is_async(name):
            return _reply(await self._host.run_async(call))
        return _reply(await self._in_turn(ticket, functools.partial(self._host.run, call)))

    async def _in_turn(self, ticket: tuple, job: Optional[Callable[[], Any]]) -> Any:
        """Queue ``job`` on the sync thread once every earlier call of its sender is queued
        (``job=None``: only take the turn)."""
        sender, seq = ticket
        async with self._order:
            await self._order.wait_for(lambda: self._next_seq.get(sender, 1) == seq)
            outcome = None
            if job is not None:
                outcome = asyncio.get_running_loop().run_in_executor(self._sync_thread, job)
            self._next_seq[sender] = seq + 1
            self._order.notify_all()
        return await outcome if outcome is not None else None


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def actor_class_for(cls: type) -> Any:
    """The Ray actor class hosting ``cls`` (generated once per class)."""
    actor = _ACTOR_CLASSES.get(cls)
    if actor is None:
        is_async = has_async_methods(cls)
        methods = {name: _forwarder(name, is_async) for name in public_methods(cls)}
        namespace = {"__module__": __name__, "__qualname__": f"Host[{cls.__name__}]", **methods}
        base = _AsyncHostActorBase if is_async else _HostActorBase
        generated = type(f"Host[{cls.__name__}]", (base,), namespace)
        # A plain actor answers control calls (retry counts) on a second thread, never behind user calls.
        remote = ray.remote if is_async else ray.remote(concurrency_groups={"control": 1})
        actor = _ACTOR_CLASSES[cls] = remote(generated)
    return actor


def start_actor(spec: WorkerSpec, actor_options: dict, name: Optional[str] = None) -> Any:
    """Create the actor hosting ``spec`` (returns at once; ``__concurry_ready__`` tells when built).

    ``name`` is its actor name in the ``concurry_ray`` namespace; while a worker that is
    dying still holds that name, ``name~1``, ``name~2``... are used instead.
    """
    actor_class = actor_class_for(spec.cls)
    if name is None:
        return actor_class.options(**actor_options).remote(spec)
    for attempt in itertools.count():
        try:
            named = {"name": name + (f"~{attempt}" if attempt else ""), "namespace": NAMESPACE}
            return actor_class.options(**actor_options, **named).remote(spec)
        except ValueError:  # the name is taken
            if attempt >= NAME_ATTEMPTS:
                raise


def _forwarder(name: str, is_async: bool):
    if is_async:

        async def forward(self, ticket, *args, **kwargs):
            return await self._run_async(name, ticket, args, kwargs)

    else:

        def forward(self, *args, **kwargs):
            return self._run(name, args, kwargs)

    forward.__name__ = name
    return ray.method(num_returns=2)(forward)


class Failed:
    """The outcome of a batched call that raised (its exception, ready to travel).

    A worker that receives it as an argument (a failed future passed on) raises
    that exception instead of running the call, as Ray does for a failed task.
    """

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self):
        return Failed, (self.error,)


class InStore:
    """The receipt of a call whose result is too large to send twice: the caller
    learns the call finished, and the value stays in the object store until asked for."""

    __slots__ = ()


IN_STORE = InStore()
INLINE_BYTES = 16 * 1024
"""Results up to about this size also travel in the call's receipt, so the caller has them at once."""


def _resolved_call(name: str, args: tuple, kwargs: dict, carrier: Optional[dict]) -> Call:
    return Call(name, _resolve(args), _resolve(kwargs), carrier)


def wire_kwargs(call: Call) -> dict:
    """The keyword arguments a call sends to its actor method: its own, and its trace context
    under :data:`TRACE_KEYWORD` when it is traced (the actor takes it out again)."""
    return call.kwargs if call.trace is None else {**call.kwargs, TRACE_KEYWORD: call.trace}


def _call_or_raise(item: Any) -> Call:
    if isinstance(item, BaseException):
        raise item
    return item


def _batch_reply(replies: list) -> list:
    """A batch task's returns: the list of receipts, then each call's value."""
    return [[receipt for receipt, _ in replies], *(value for _, value in replies)]


def _reply(value: Any) -> tuple:
    """A call's two returns: the receipt (the value itself when small) and the value."""
    return (value if _fits(value, INLINE_BYTES) >= 0 else IN_STORE), value


_SCALARS = frozenset({type(None), bool, int, float, complex})


def _fits(value: Any, budget: int) -> int:
    """``budget`` less a rough size of ``value``; negative when it does not fit (or is of an unknown type)."""
    kind = type(value)
    if kind in _SCALARS:
        return budget - 16
    if kind is str or kind is bytes:
        return budget - len(value)
    if kind is dict:
        value = (item for pair in value.items() for item in pair)
    elif kind not in (list, tuple, set, frozenset):
        return -1
    budget -= 64
    for item in value:
        if budget < 0:
            break
        budget = _fits(item, budget - 8)
    return budget


def _is_ref_or_failed(value: Any) -> bool:
    return isinstance(value, (ray.ObjectRef, Failed))


def _resolve(value: Any) -> Any:
    """Replace ObjectRefs nested in lists, tuples and dicts by their values (top-level ones Ray resolves);
    raise the error of a failed call passed as an argument."""
    found, refs = _refs_in(value)
    return _resolved(value, found, refs, ray.get(refs) if refs else []) if found else value


async def _resolve_async(value: Any) -> Any:
    found, refs = _refs_in(value)
    return _resolved(value, found, refs, await asyncio.gather(*refs)) if found else value


def _refs_in(value: Any) -> tuple[list, list]:
    """The ObjectRefs and Failed markers nested in ``value``, and the refs among them."""
    found = collect(value, _is_ref_or_failed, [])
    return found, [item for item in found if type(item) is not Failed]


def _resolved(value: Any, found: list, refs: list, values: list) -> Any:
    failed = next((item for item in [*found, *values] if type(item) is Failed), None)
    if failed is not None:
        raise failed.error
    return replace(value, dict(zip(map(id, refs), values))) if refs else value
