"""One Future type for every mode, and the functions that wait on many of them.

A :class:`Future` is a :class:`concurrent.futures.Future` that can also be awaited.
Producers (the backends) only ever set it running, set its result or set its
exception; consumers never need to know which mode filled it. Waiting is event
driven: ``result()`` blocks on a condition variable, ``await`` hands the future
to the running event loop; nothing polls.

This module knows no backend (CPython's ``concurrent.futures`` is the model: a
future is filled, never informed). A backend that keeps results at home fills
a future with a :class:`Stored` value, which ``result()`` or ``await`` fetches
once, and may leave its own handle on the call in :attr:`Future.native`, which
only that backend reads. A backend's own reference type for a pending result
is taken wherever a future is once the backend registers an :class:`Adapter`
for it (:func:`register_adapter`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import importlib
import itertools
import queue
import sys
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, CancelledError, TimeoutError
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

from .conditions import FutureCondition
from .enums import PollingAlgorithm, ReturnWhen, parse
from .errors import ConfigError
from .nested import collect, replace

__all__ = [
    "Future",
    "wrap_future",
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

    ``native`` is the producer's own handle on the call's result, or None. It is
    opaque here: the backend that made the call sets it (before the result) and
    reads it, to send the future to its own workers unresolved, worker to worker
    (see ``Backend.native_form``).
    """

    native: Any = None

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
        return _kept(self, value, value.fetch(timeout)) if type(value) is Stored else value

    def __await__(self):
        return _on_loop(self).__await__()

    def __repr__(self) -> str:
        return super().__repr__().replace("<Future", "<concurry_ray.Future", 1)


class Stored:
    """A call's result that its producer keeps at home until someone asks for it.

    A backend whose workers can keep a large result where it was made (in a
    shared object store, say) sets a future's result to a Stored, so the caller
    learns that the call finished without receiving the value. ``result()``
    fetches it with ``fetch(timeout)``, ``await`` with ``fetch_async()`` (so the
    event loop's thread never blocks); either way once, and the future keeps
    the value from then on. The backend supplies both functions.
    """

    __slots__ = ("fetch", "fetch_async")

    def __init__(self, fetch: Callable[[float | None], Any], fetch_async: Callable[[], Any]) -> None:
        self.fetch, self.fetch_async = fetch, fetch_async


def _kept(future: cf.Future, stored: Stored, value: Any) -> Any:
    """``value``, fetched for ``stored``, kept as ``future``'s result in its place."""
    with future._condition:
        if future._result is stored:
            future._result = value
    return value


_ASYNCIO_ERRORS = {
    cf.CancelledError: asyncio.CancelledError,
    cf.TimeoutError: asyncio.TimeoutError,
    cf.InvalidStateError: asyncio.InvalidStateError,
}
"""The conversions ``asyncio.wrap_future`` makes of a concurrent future's exception (exact types only)."""


def _on_loop(future: cf.Future) -> asyncio.Future:
    """An asyncio future on the running loop that settles as ``future`` does: what ``await`` waits on.

    It behaves as ``asyncio.wrap_future(future)`` (cancelling it cancels
    ``future``; exceptions are converted alike), except that a :class:`Stored`
    value is fetched with its ``fetch_async``: ``wrap_future`` calls ``result()``,
    which would fetch it by blocking the loop's thread.
    """
    loop = asyncio.get_running_loop()
    out = loop.create_future()

    def copy() -> None:  # on the loop's thread
        if out.cancelled():
            return
        if future.cancelled():
            out.cancel()
            return
        value, error = peek(future)
        if error is not None:
            kind = _ASYNCIO_ERRORS.get(type(error))
            out.set_exception(error if kind is None else kind(*error.args))
        elif type(value) is Stored:
            _fetch_into(out, future, value)
        else:
            out.set_result(value)

    def done(_: cf.Future) -> None:  # on the thread that settled ``future``
        if not loop.is_closed():
            loop.call_soon_threadsafe(copy)

    out.add_done_callback(lambda o: o.cancelled() and future.cancel())
    future.add_done_callback(done)
    return out


def _fetch_into(out: asyncio.Future, future: cf.Future, stored: Stored) -> None:
    """Settle ``out`` with ``stored``'s value, fetched on the running loop; cancelling ``out`` stops the fetch."""
    fetching = asyncio.ensure_future(stored.fetch_async())
    out.add_done_callback(lambda o: o.cancelled() and fetching.cancel())

    def copy(task: asyncio.Future) -> None:
        if out.cancelled():
            return
        if task.cancelled():
            out.cancel()
        elif task.exception() is not None:
            out.set_exception(task.exception())
        else:
            out.set_result(_kept(future, stored, task.result()))

    fetching.add_done_callback(copy)


class Adapter(NamedTuple):
    """How :func:`wrap_future` and the wait functions take one more kind of pending result.

    A backend with its own reference type for a pending result registers one
    (:func:`register_adapter`): values of type ``kind`` are then accepted wherever
    a future is, and ``to_future(value)`` gives the :class:`Future` settled when
    the value is ready.
    """

    kind: type
    to_future: Callable[[Any], "Future"]


_adapters: list[Adapter] = []
_kinds: tuple[type, ...] = (cf.Future, asyncio.Future)
"""Every type a pending result can have: the two futures, then each adapter's kind."""
_waiting: list[tuple[str, str]] = []
"""``(module, "package.module:NAME")`` of adapters registered by where they live, not loaded yet."""
_adapters_lock = threading.Lock()


def register_adapter(adapter: Adapter | str, when_imported: str | None = None) -> None:
    """Accept one more kind of pending result: an :class:`Adapter`, or where one lives.

    Given as ``"package.module:NAME"``, the adapter is loaded only once the
    module ``when_imported`` is in ``sys.modules`` and a value of no known kind
    is met. A backend's reference can only exist once the library that makes it
    was imported, so a program that never imports that library never loads the
    adapter (or the library), while one that made such a reference without ever
    building a pool of that backend still finds it understood.
    """
    with _adapters_lock:
        if isinstance(adapter, str):
            if when_imported is None:
                raise TypeError(f"register_adapter({adapter!r}) needs when_imported=, the module it waits for")
            _waiting.append((when_imported, adapter))
        elif adapter not in _adapters:
            _adopt(adapter)


def _adopt(adapter: Adapter) -> None:
    """Start taking values of ``adapter.kind`` (``_adapters_lock`` held)."""
    global _kinds
    _adapters.append(adapter)
    _kinds = (*_kinds, adapter.kind)


def _load_waiting() -> bool:
    """Load the waiting adapters whose module has been imported meanwhile; True if any was."""
    ready = [entry for entry in _waiting if entry[0] in sys.modules] if _waiting else ()
    for entry in ready:
        module, _, name = entry[1].partition(":")
        adapter = getattr(importlib.import_module(module), name)  # outside the lock: that module may register one
        with _adapters_lock:
            if entry in _waiting:
                _waiting.remove(entry)
            if adapter not in _adapters:
                _adopt(adapter)
    return bool(ready)


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
    """A concurrent future for a Future, concurrent future, asyncio future or a kind an :class:`Adapter` takes."""
    if isinstance(obj, cf.Future):
        return obj
    if isinstance(obj, asyncio.Future):
        return _from_asyncio(obj)
    if is_awaitable_result(obj):
        return next(adapter for adapter in _adapters if isinstance(obj, adapter.kind)).to_future(obj)
    kinds = ", ".join(kind.__name__ for kind in _kinds)
    raise TypeError(f"expected a future (one of {kinds}), got {type(obj).__name__}: {obj!r}")


def wrap_future(obj: Any) -> Future:
    """Our :class:`Future` for any future-like object, or a done one holding a plain value.

    - a :class:`Future` is returned as it is;
    - a ``concurrent.futures.Future`` or an asyncio future (or task) gives a
      Future that settles when it does; cancelling that Future also cancels the
      original (which a running concurrent future ignores). An asyncio future is
      read only on its own event loop, so that loop is never blocked; one already
      done is copied at once (do not block on a pending one from its own loop's
      thread: ``await`` it);
    - a coroutine is first scheduled as a task on the running event loop
      (``RuntimeError`` when none runs);
    - a backend's own reference to a pending result, of a kind an
      :class:`Adapter` was registered for, gives a Future settled when it is;
    - anything else gives a Future already done with that value.
    """
    if isinstance(obj, Future):
        return obj
    if isinstance(obj, Coroutine):
        obj = _scheduled(obj)
    if not is_awaitable_result(obj):
        return finished_future(obj)
    source = as_future(obj)
    return source if isinstance(source, Future) else _mirror(source)


def finished_future(value: Any = None, error: BaseException | None = None) -> Future:
    """A Future already done, with ``value`` or (when given) ``error``."""
    future = Future()
    settle(future, value, error)
    return future


def _scheduled(coroutine: Coroutine) -> asyncio.Task:
    """A task running ``coroutine`` on the running event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        coroutine.close()
        raise RuntimeError("wrap_future: a coroutine needs a running event loop; await it, or pass a task") from None
    return loop.create_task(coroutine)


def _mirror(source: cf.Future) -> Future:
    """A Future that copies ``source``'s outcome; cancelling it also cancels ``source``."""
    out = Future()
    chain(source, out)
    out.add_done_callback(lambda f: f.cancelled() and source.cancel())
    return out


def _from_asyncio(source: asyncio.Future) -> Future:
    """A Future that copies an asyncio future's outcome, read on that future's own loop (asyncio
    futures are not thread safe); a future already done is copied at once, from any thread."""
    out = Future()
    loop = source.get_loop()

    def copy(done: asyncio.Future) -> None:
        if done.cancelled():
            out.cancel()
            return
        error = done.exception()
        settle(out, None if error is not None else done.result(), error)

    if source.done():
        copy(source)
    else:
        _call_in_loop(loop, source.add_done_callback, copy)
    out.add_done_callback(lambda f: f.cancelled() and not loop.is_closed() and _call_in_loop(loop, source.cancel))
    return out


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable, *args: Any) -> None:
    """Call ``fn(*args)`` on ``loop``'s thread: now when that is this thread, else soon."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(*args)
    else:
        loop.call_soon_threadsafe(fn, *args)


def is_awaitable_result(obj: Any) -> bool:
    """True for objects that :func:`gather` and :func:`wait` treat as pending results: futures,
    and the kinds registered adapters take (a waiting one is loaded when its module was imported)."""
    return isinstance(obj, _kinds) or (_load_waiting() and isinstance(obj, _kinds))


class _Progress:
    """Counts finished futures for the ``progress=`` option of the wait and gather functions.

    ``progress`` is False/None (nothing shown), True (a :class:`ProgressBar`), a dict of
    ProgressBar options, or a callable ``fn(done, total, elapsed_seconds)`` called
    after each one. Nothing is counted after :meth:`close`.
    """

    def __init__(self, progress: Any, total: int, desc: str) -> None:
        self._total, self._count, self._start = total, itertools.count(1), time.monotonic()
        self._counted = threading.Semaphore(0)  # released once per future counted
        self._callback = progress if callable(progress) else None
        self._bar = None
        if progress and self._callback is None:
            from .progress import ProgressBar

            options = progress if isinstance(progress, dict) else {}
            self._bar = ProgressBar(total=total, **{"desc": desc, **options})
        self.active = bool(progress)

    def watch(self, futures: Iterable[Any]) -> None:
        """Count each of ``futures`` when it is done."""
        if self.active:
            for future in futures:
                future.add_done_callback(self.tick)

    def tick(self, _: Any = None) -> None:
        """One more is done."""
        if not self.active:
            return
        try:
            done = next(self._count)
            if self._bar is not None:
                self._bar.update(1)
            else:
                self._callback(done, self._total, time.monotonic() - self._start)
        finally:
            self._counted.release()

    def close(self, counted: int = 0) -> None:
        """Stop counting and close the bar, once ``counted`` futures have been counted: a wait
        can see a future done before its done-callbacks (this count among them) have run."""
        for _ in range(counted if self.active else 0):
            self._counted.acquire()
        if self.active and self._bar is not None:
            self._bar.close()
        self.active = False


def _inputs(fs: Any, futs: tuple, caller: str) -> tuple[list | None, list]:
    """The keys (of a dict, else None) and the items that wait and gather were given.

    ``fs`` is one list, tuple, set, dict or other iterable of items, or the first
    of several items given one by one (``gather(f1, f2)``); one future alone is
    one item.
    """
    if futs:
        if isinstance(fs, (list, tuple, set, frozenset, Mapping)):
            raise ConfigError(
                f"{caller}: pass either one list/tuple/set/dict of futures or futures one by one, not both "
                f"(got a {type(fs).__name__} and {len(futs)} more); options such as timeout= are keywords"
            )
        return None, [fs, *futs]
    if isinstance(fs, Mapping):
        return list(fs.keys()), list(fs.values())
    if is_awaitable_result(fs) or isinstance(fs, (str, bytes, Coroutine)) or not isinstance(fs, Iterable):
        return None, [fs]
    return None, list(fs)


def _return_when(value: Any) -> str:
    """The ``concurrent.futures`` constant for a ``return_when`` given as any ReturnWhen spelling or member."""
    return parse(ReturnWhen, value, "return_when").name


def _check_polling(polling: Any) -> None:
    """Validate concurry's ``polling=`` option, which we accept and ignore: our waits never poll."""
    if polling is not None:
        parse(PollingAlgorithm, polling, "polling")


def _waitable(item: Any) -> Any:
    """``item`` as the wait functions hold it: a future as it is, anything else through :func:`wrap_future`."""
    return item if is_awaitable_result(item) else wrap_future(item)


def _found(values: list, recurse: bool) -> list:
    """The futures among ``values``; with ``recurse`` also those nested in lists, tuples, sets and dicts."""
    if not recurse:
        return [value for value in values if is_awaitable_result(value)]
    found: list = []
    for value in values:
        collect(value, is_awaitable_result, found)
    return found


def wait(
    fs: Any,
    *futs: Any,
    timeout: float | None = None,
    return_when: ReturnWhen | str = ALL_COMPLETED,
    polling: PollingAlgorithm | str | None = None,
    progress: Any = False,
    recurse: bool = False,
) -> tuple[set, set]:
    """Wait for futures; returns ``(done, not_done)`` like :func:`concurrent.futures.wait`.

    ``fs`` is a list, tuple, set or dict (its values) of futures, or the first of
    futures given one by one (``wait(f1, f2)``). The sets hold the objects you
    passed (a backend's reference stays as it is); a plain value counts as done and
    comes back as the Future :func:`wrap_future` makes of it. ``recurse=True``
    waits for the futures nested in lists, tuples, sets and dicts instead (plain
    values there are skipped).

    ``return_when`` is ``ALL_COMPLETED``, ``FIRST_COMPLETED`` or ``FIRST_EXCEPTION``,
    a :class:`ReturnWhen` member or any spelling it accepts (``"first"``).
    ``progress`` is True, a dict of :class:`ProgressBar` options or a callable
    ``fn(done, total, elapsed)``. ``polling`` is accepted for concurry
    compatibility and ignored: waiting is event driven. A timeout never raises:
    whatever has not finished is in ``not_done``.
    """
    when = _return_when(return_when)
    _check_polling(polling)
    _, items = _inputs(fs, futs, "wait")
    items = _found(items, True) if recurse else [_waitable(item) for item in items]
    mapping = {as_future(f): f for f in items}
    tracker = _Progress(progress, len(mapping), "Waiting")
    tracker.watch(mapping)
    done, not_done = cf.wait(list(mapping), timeout=timeout, return_when=when)
    tracker.close(counted=len(done))
    return {mapping[f] for f in done}, {mapping[f] for f in not_done}


def gather(
    fs: Any,
    *futs: Any,
    return_exceptions: bool = False,
    iter: bool = False,
    timeout: float | None = None,
    polling: PollingAlgorithm | str | None = None,
    progress: Any = False,
    recurse: bool = False,
) -> list | dict | Iterator[tuple]:
    """Results of many futures, in input order (a list) or by key (a dict).

    ``fs`` is a list, tuple, set or dict of futures, or the first of futures given
    one by one (``gather(f1, f2)`` is a list). Plain values are passed through.
    With ``return_exceptions=True`` a failed call's exception takes its place.
    Otherwise gather fails fast: as soon as a call fails, its exception is raised
    (the first failed one in input order, among those finished). ``timeout``
    bounds the whole wait and raises ``TimeoutError``.

    ``recurse=True`` also resolves futures nested in lists, tuples, sets and dicts
    (the structure is rebuilt with their results). ``iter=True`` returns an
    iterator of ``(index or key, result)`` pairs in the order the items finish.
    ``progress`` is as for :func:`wait`; ``polling`` is accepted and ignored.
    """
    _check_polling(polling)
    keys, values = _inputs(fs, futs, "gather")
    if iter:
        return _gather_iter(keys, values, return_exceptions, timeout, progress, recurse)
    found = _found(values, recurse)
    futures = [as_future(f) for f in found]
    tracker = _Progress(progress, len(futures), "Gathering")
    tracker.watch(futures)
    try:
        by_id = _resolved(found, futures, return_exceptions, timeout)
    finally:
        tracker.close()
    results = [_rebuilt(value, by_id, recurse) for value in values]
    return dict(zip(keys, results)) if keys is not None else results


def _gather_iter(
    keys: list | None, values: list, return_exceptions: bool, timeout: float | None, progress: Any, recurse: bool
) -> Iterator[tuple]:
    """``gather(iter=True)``: ``(index or key, result)`` of each item once it (with ``recurse``,
    every future inside it) is done; items done already come first, in input order."""
    labels = keys if keys is not None else range(len(values))
    ready: queue.SimpleQueue = queue.SimpleQueue()
    items = []
    for index, value in enumerate(values):
        found = _found([value], recurse)
        futures = [as_future(f) for f in found]
        items.append((found, futures))
        when_all_done(futures, lambda index=index: ready.put(index))
    tracker = _Progress(progress, len(values), "Gathering")
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for count in range(len(values)):
            try:
                index = ready.get(timeout=seconds_left(deadline))
            except queue.Empty:
                pending = len(values) - count
                raise TimeoutError(f"gather: {pending} of {len(values)} items still pending after {timeout}s") from None
            by_id = _resolved(*items[index], return_exceptions, seconds_left(deadline))
            tracker.tick()
            yield labels[index], _rebuilt(values[index], by_id, recurse)
    finally:
        tracker.close()


def _resolved(found: list, futures: list, return_exceptions: bool, timeout: float | None) -> dict[int, Any]:
    """``{id(original): result}`` of the ``found`` futures (``futures`` are their concurrent forms).

    A failed one's result is its exception with ``return_exceptions``; otherwise
    the first failure in input order is raised, as soon as one fails. Raises
    TimeoutError when some are still pending after ``timeout``.
    """
    by_id, pending = {}, 0
    for original, (value, error) in zip(found, _outcomes(futures, not return_exceptions, timeout)):
        if error is not None and not return_exceptions:
            raise error  # the first failure in input order (CancelledError for a cancelled call)
        pending += value is _PENDING
        by_id[id(original)] = value if error is None else error
    if pending:
        raise TimeoutError(f"gather: {pending} of {len(found)} futures still pending after {timeout}s")
    return by_id


def _outcomes(futures: list, fail_fast: bool, timeout: float | None) -> list[tuple]:
    """:func:`peek` of each future after waiting for all of them, for one failure
    (``fail_fast``), or for ``timeout``; :class:`Stored` values are fetched."""
    outcomes = [peek(f) for f in futures]
    if not (fail_fast and any(error is not None for _, error in outcomes)):
        _wait_all([f for f, (value, _) in zip(futures, outcomes) if value is _PENDING], timeout, fail_fast)
        outcomes = [peek(f) for f in futures]
    deadline = None if timeout is None else time.monotonic() + timeout
    for index, (value, _) in enumerate(outcomes):
        if type(value) is Stored:
            outcomes[index] = _fetched_outcome(futures[index], seconds_left(deadline))
    return outcomes


def _rebuilt(value: Any, by_id: dict[int, Any], recurse: bool) -> Any:
    """``value`` with its future replaced by the result; with ``recurse`` the nested ones too."""
    return replace(value, by_id) if recurse else by_id.get(id(value), value)


def when_all_done(futures: list, fn: Callable[[], Any]) -> None:
    """Call ``fn()`` once every one of ``futures`` is done (at once when there are none)."""
    if not futures:
        fn()
        return
    last = len(futures) - 1
    count = itertools.count()  # next() on it is atomic, so callbacks on many threads need no lock

    def one_done(_: cf.Future) -> None:
        if next(count) == last:
            fn()

    for future in futures:
        future.add_done_callback(one_done)


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


def _fetched_outcome(future: Future, timeout: float | None) -> tuple:
    """``(value, None)`` of a future holding a :class:`Stored` value (fetched now), or ``(None, error)``."""
    try:
        return future.result(timeout), None
    except Exception as error:
        return None, error


_PENDING = object()
_PENDING_STATE = cf._base.PENDING
_FINISHED = cf._base.FINISHED


def failed(future: cf.Future) -> bool:
    """Whether a finished future failed or was cancelled (read like :func:`peek` reads it)."""
    return future._state != _FINISHED or future._exception is not None


def peek(future: cf.Future) -> tuple:
    """``(value, None)`` or ``(None, error)`` of a finished future (CancelledError if cancelled); ``(_PENDING, None)`` if not finished.

    It reads the stdlib future's fields directly: one attribute read instead of
    two or three trips through its lock, on gather's and the pool's hot paths.
    That is safe because a future's outcome never changes once it is set.
    """
    state = future._state
    if state == _FINISHED:
        error = future._exception
        return (None, error) if error is not None else (future._result, None)
    if future.cancelled():
        return None, CancelledError()
    return _PENDING, None


def as_completed(fs: Iterable[Any], timeout: float | None = None) -> Iterator[Any]:
    """Yield the given futures as they complete (the originals, so a backend's reference stays as it is)."""
    mapping = {as_future(f): f for f in fs}
    for f in cf.as_completed(list(mapping), timeout=timeout):
        yield mapping[f]


async def async_gather(
    fs: Any, *futs: Any, return_exceptions: bool = False, timeout: float | None = None, progress: Any = False
) -> list | dict:
    """``await``-able :func:`gather`: resolves worker futures without blocking the loop.

    Takes what :func:`gather` takes, and coroutines (run as tasks). ``timeout``
    raises ``TimeoutError`` and leaves the futures running; ``progress`` is as
    for :func:`wait`.
    """
    keys, values = _inputs(fs, futs, "async_gather")
    tasks = [asyncio.ensure_future(_awaitable(value)) for value in values]
    tracker = _Progress(progress, len(tasks), "Gathering")
    tracker.watch(tasks)
    gathered = asyncio.gather(*tasks, return_exceptions=return_exceptions)
    try:
        results = await (gathered if timeout is None else _within(gathered, tasks, timeout))
    finally:
        tracker.close()
    return dict(zip(keys, results)) if keys is not None else list(results)


async def _within(gathered: asyncio.Future, tasks: list, timeout: float) -> list:
    """The results of ``gathered``; TimeoutError after ``timeout`` seconds, leaving ``tasks`` running."""
    try:
        return await asyncio.wait_for(asyncio.shield(gathered), timeout)
    except TimeoutError:
        if gathered.done():
            raise  # a call's own TimeoutError
        gathered.add_done_callback(lambda g: g.cancelled() or g.exception())  # retrieved: nothing to log
        pending = sum(not task.done() for task in tasks)
        raise TimeoutError(f"async_gather: {pending} of {len(tasks)} still pending after {timeout}s") from None


async def async_wait(
    fs: Any,
    *futs: Any,
    timeout: float | None = None,
    return_when: ReturnWhen | str = ALL_COMPLETED,
    progress: Any = False,
) -> tuple[set, set]:
    """``await``-able :func:`wait`: returns ``(done, not_done)`` of the originals.

    Takes what :func:`wait` takes (without ``recurse``); a coroutine or plain
    value comes back as the Future :func:`wrap_future` makes of it. A timeout
    never raises.
    """
    when = _return_when(return_when)
    _, items = _inputs(fs, futs, "async_wait")
    wrapped = {asyncio.ensure_future(_awaitable(f)): f for f in map(_waitable, items)}
    if not wrapped:
        return set(), set()
    tracker = _Progress(progress, len(wrapped), "Waiting")
    tracker.watch(wrapped)
    try:
        done, not_done = await asyncio.wait(list(wrapped), timeout=timeout, return_when=when)
    finally:
        tracker.close()
    return {wrapped[f] for f in done}, {wrapped[f] for f in not_done}


def _awaitable(obj: Any):
    """Something ``asyncio.gather`` can wait for that gives ``obj``'s result (``obj`` itself for a plain value)."""
    if isinstance(obj, (asyncio.Future, Coroutine)):
        return obj
    if is_awaitable_result(obj):
        return _on_loop(as_future(obj))  # fetches a Stored value without blocking the loop
    return _value(obj)


async def _value(obj: Any) -> Any:
    return obj
