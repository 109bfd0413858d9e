"""One Future type for every mode, and the functions that wait on many of them.

A :class:`Future` is a :class:`concurrent.futures.Future` that can also be awaited.
Producers (the backends) only ever set it running, set its result or set its
exception; consumers never need to know which mode filled it. Waiting is event
driven: ``result()`` blocks on a condition variable, ``await`` hands the future
to the running event loop through ``asyncio.wrap_future``; nothing polls.

A future filled by a Ray actor also remembers its ``ObjectRef`` so that passing
it to another Ray worker moves the data worker to worker, not through the driver.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import itertools
import threading
import time
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, CancelledError, TimeoutError
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .conditions import FutureCondition

__all__ = [
    "Future",
    "wait",
    "gather",
    "as_completed",
    "async_gather",
    "async_wait",
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "CancelledError",
    "TimeoutError",
]


class Future(cf.Future):
    """The result of a call on a worker or pool, in any mode.

    Use it like :class:`concurrent.futures.Future` (``result(timeout)``,
    ``exception(timeout)``, ``done()``, ``cancel()``, ``add_done_callback``) or
    ``await`` it from async code. ``TimeoutError`` and ``CancelledError`` are the
    ``concurrent.futures`` ones.
    """

    _ray_ref: Any = None

    def __init__(self, on_done: Callable[["Future"], Any] | None = None) -> None:
        # The fields of concurrent.futures.Future.__init__ (a test checks they match), with
        # a condition built in C; ``on_done`` is added without the lock: nobody sees us yet.
        self._condition = FutureCondition()
        self._state = _PENDING_STATE
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks = [] if on_done is None else [on_done]

    def result(self, timeout: float | None = None) -> Any:
        value = super().result(timeout)
        return self._fetched(value, timeout) if type(value) is Stored else value

    def _fetched(self, stored: "Stored", timeout: float | None) -> Any:
        """Fetch a value left in Ray's object store, once; later calls return the copy."""
        value = stored.fetch(timeout)
        with self._condition:
            if self._result is stored:
                self._result = value
        return value

    def __await__(self):
        if self._ray_ref is None:
            return asyncio.wrap_future(self).__await__()
        return self._awaited().__await__()

    async def _awaited(self) -> Any:
        """Await a Ray call without fetching a stored value on the event loop's thread."""
        raw = cf.Future()
        chain(self, raw)
        raw.add_done_callback(lambda r: r.cancelled() and self.cancel())
        value = await asyncio.wrap_future(raw)
        return await value.fetch_async() if type(value) is Stored else value

    def __repr__(self) -> str:
        return super().__repr__().replace("<Future", "<concurry_ray.Future", 1)


class Stored:
    """A call's result that stays in Ray's object store until someone asks for it.

    A Ray worker returns large results this way, so the driver only learns that
    the call finished; ``Future.result()`` fetches the value (once), and passing
    the future to another Ray worker moves it worker to worker. Built by the Ray
    backend, which supplies the two ways of fetching.
    """

    __slots__ = ("fetch", "fetch_async")

    def __init__(self, fetch: Callable[[float | None], Any], fetch_async: Callable[[], Any]) -> None:
        self.fetch, self.fetch_async = fetch, fetch_async


def settle(future: cf.Future, value: Any = None, error: BaseException | None = None) -> None:
    """Set a future's outcome unless it was cancelled or already set meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except cf.InvalidStateError:
        pass


def seconds_left(deadline: float | None) -> float | None:
    """Seconds from now until ``deadline`` (a ``time.monotonic()`` value), never negative; None for no deadline."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def cancelled(label: str) -> CancelledError:
    """The CancelledError of a call whose worker stopped before the call finished."""
    return CancelledError(f"cancelled: {label} was stopped before the call finished")


def chain(source: cf.Future, target: cf.Future) -> None:
    """Copy ``source``'s outcome into ``target`` when it completes."""

    def _copy(done: cf.Future) -> None:
        if done.cancelled():
            target.cancel() or settle(target, error=CancelledError())
            return
        settle(target, *peek(done))  # a Stored value is copied as it is, not fetched

    source.add_done_callback(_copy)


def as_future(obj: Any) -> cf.Future:
    """A concurrent future for a Future, concurrent future, asyncio future or Ray ObjectRef."""
    if isinstance(obj, cf.Future):
        return obj
    if isinstance(obj, asyncio.Future):
        out = Future()
        obj.get_loop().call_soon_threadsafe(
            lambda: obj.add_done_callback(lambda f: settle(out, None if f.exception() else f.result(), f.exception()))
        )
        return out
    ref_future = getattr(obj, "future", None)
    if ref_future is not None and type(obj).__name__ == "ObjectRef":
        from .ray.outcomes import future_from_ref

        return future_from_ref(obj)
    raise TypeError(f"expected a Future or Ray ObjectRef, got {type(obj).__name__}: {obj!r}")


def is_awaitable_result(obj: Any) -> bool:
    """True for objects that :func:`gather` and :func:`wait` treat as pending results."""
    return isinstance(obj, (cf.Future, asyncio.Future)) or type(obj).__name__ == "ObjectRef"


def _progress_bar(progress: Any, total: int):
    if not progress:
        return None
    from .progress import ProgressBar

    options = progress if isinstance(progress, dict) else {}
    return ProgressBar(total=total, **{"desc": "Waiting", **options})


def wait(
    fs: Iterable[Any],
    timeout: float | None = None,
    return_when: str = ALL_COMPLETED,
    progress: Any = False,
) -> tuple[set, set]:
    """Wait for futures; returns ``(done, not_done)`` like :func:`concurrent.futures.wait`.

    A timeout never raises: whatever has not finished is in ``not_done``.
    """
    items = list(fs)
    mapping = {as_future(f): f for f in items}
    bar = _progress_bar(progress, len(mapping))
    if bar is not None:
        for f in mapping:
            f.add_done_callback(lambda _f: bar.update(1))
    done, not_done = cf.wait(list(mapping), timeout=timeout, return_when=return_when)
    if bar is not None:
        bar.close()
    return {mapping[f] for f in done}, {mapping[f] for f in not_done}


def gather(
    fs: Sequence[Any] | Mapping[Any, Any],
    return_exceptions: bool = False,
    timeout: float | None = None,
    progress: Any = False,
) -> list | dict:
    """Results of many futures, in input order (a list) or by key (a dict).

    Plain values are passed through. With ``return_exceptions=True`` a failed
    call's exception takes its place. Otherwise gather fails fast: as soon as a
    call fails, its exception is raised (the first failed one in input order,
    among those finished). ``timeout`` bounds the whole wait and raises
    ``TimeoutError``.
    """
    keys, values = (list(fs.keys()), list(fs.values())) if isinstance(fs, Mapping) else (None, list(fs))
    futures = [as_future(v) if is_awaitable_result(v) else None for v in values]
    real = [f for f in futures if f is not None]
    bar = _progress_bar(progress, len(real))
    if bar is not None:
        for f in real:
            f.add_done_callback(lambda _f: bar.update(1))
    outcomes = {id(f): peek(f) for f in real}
    fail_fast = not return_exceptions
    if not (fail_fast and any(error is not None for _, error in outcomes.values())):
        waiting = [f for f in real if outcomes[id(f)][0] is _PENDING]
        _wait_all(waiting, timeout, fail_fast)
        outcomes.update((id(f), peek(f)) for f in waiting)
    if bar is not None:
        bar.close()
    deadline = None if timeout is None else time.monotonic() + timeout
    for f in real:
        if type(outcomes[id(f)][0]) is Stored:
            outcomes[id(f)] = _fetched_outcome(f, seconds_left(deadline))
    results = [value if f is None else outcomes[id(f)] for f, value in zip(futures, values)]
    return _assembled(keys, results, return_exceptions, timeout)


def _assembled(keys: list | None, results: list, return_exceptions: bool, timeout: float | None) -> list | dict:
    """gather's answer from its (value, error) pairs: raise the first error in input
    order (unless ``return_exceptions``), then TimeoutError if any is still pending."""
    values, not_done = [], 0
    for item in results:
        if type(item) is not _Outcome:
            values.append(item)
            continue
        value, error = item
        if error is not None and not return_exceptions:
            raise error  # the first failure in input order (CancelledError for a cancelled call)
        not_done += value is _PENDING
        values.append(error if error is not None else value)
    if not_done:
        raise TimeoutError(f"gather: {not_done} of {len(values)} futures still pending after {timeout}s")
    return dict(zip(keys, values)) if keys is not None else values


def _wait_all(futures: list, timeout: float | None, fail_fast: bool) -> None:
    """Block until every future is done, or (``fail_fast``) one failed or was cancelled, or ``timeout`` passed."""
    if not futures:
        return
    finished = threading.Event()
    last = len(futures) - 1
    count = itertools.count()  # next() on it is atomic, so callbacks on many threads need no lock

    def one_done(future: cf.Future) -> None:
        if next(count) == last or (fail_fast and failed(future)):
            finished.set()

    for future in futures:
        future.add_done_callback(one_done)
    finished.wait(timeout)


def _fetched_outcome(future: Future, timeout: float | None) -> "_Outcome":
    """``(value, None)`` of a future whose value was left in Ray's object store, or ``(None, error)``."""
    try:
        return _Outcome((future.result(timeout), None))
    except Exception as error:
        return _Outcome((None, error))


class _Outcome(tuple):
    """``(value, error)`` of a future as :func:`peek` read it (a distinct type, so a
    user's plain tuple passed to gather is never mistaken for one)."""


_PENDING = object()
_PENDING_STATE = cf._base.PENDING
_FINISHED = cf._base.FINISHED


def failed(future: cf.Future) -> bool:
    """Whether a finished future failed or was cancelled (read like :func:`peek` reads it)."""
    return future._state != _FINISHED or future._exception is not None


def peek(future: cf.Future) -> _Outcome:
    """``(value, None)`` or ``(None, error)`` of a finished future (CancelledError if cancelled); ``(_PENDING, None)`` if not finished.

    It reads the stdlib future's fields directly: one attribute read instead of
    two or three trips through its lock, on gather's and the pool's hot paths.
    That is safe because a future's outcome never changes once it is set.
    """
    state = future._state
    if state == _FINISHED:
        error = future._exception
        return _Outcome((None, error) if error is not None else (future._result, None))
    if future.cancelled():
        return _Outcome((None, CancelledError()))
    return _Outcome((_PENDING, None))


def as_completed(fs: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
    """Yield the given futures as they complete (the originals, so ObjectRefs stay ObjectRefs)."""
    mapping = {as_future(f): f for f in fs}
    for f in cf.as_completed(list(mapping), timeout=timeout):
        yield mapping[f]


async def async_gather(fs: Sequence[Any] | Mapping[Any, Any], return_exceptions: bool = False) -> list | dict:
    """``await``-able :func:`gather`: resolves worker futures without blocking the loop."""
    keys, values = (list(fs.keys()), list(fs.values())) if isinstance(fs, Mapping) else (None, list(fs))
    awaitables = [_awaitable(v) for v in values]
    results = await asyncio.gather(*awaitables, return_exceptions=return_exceptions)
    return dict(zip(keys, results)) if keys is not None else list(results)


async def async_wait(
    fs: Iterable[Any], timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> tuple[set, set]:
    """``await``-able :func:`wait`: returns ``(done, not_done)`` of the originals."""
    items = list(fs)
    wrapped = {asyncio.ensure_future(_awaitable(f)): f for f in items}
    if not wrapped:
        return set(), set()
    done, not_done = await asyncio.wait(list(wrapped), timeout=timeout, return_when=return_when)
    return {wrapped[f] for f in done}, {wrapped[f] for f in not_done}


def _awaitable(obj: Any):
    if isinstance(obj, asyncio.Future):
        return obj
    if isinstance(obj, Future) and obj._ray_ref is not None:
        return obj._awaited()  # fetches a value left in Ray's object store without blocking the loop
    if is_awaitable_result(obj):
        return asyncio.wrap_future(as_future(obj))
    return _value(obj)


async def _value(obj: Any) -> Any:
    return obj
