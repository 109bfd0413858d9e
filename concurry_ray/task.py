"""TaskWorker, ``@task`` and ``Executor()``: run plain functions on workers, one call at a time or as a map."""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import itertools
import threading
import time
import uuid
import weakref
from collections import OrderedDict, deque
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional

import cloudpickle

from .display import pool_html, read_stats
from .futures import Future, seconds_left
from .pools.handle import Pool
from .progress import ProgressBar
from .worker import Worker, WorkerBuilder

LOADED_FUNCTIONS = 256
"""How many shipped functions a worker keeps unpickled (least recently used ones are dropped)."""


class ShippedFunction(NamedTuple):
    """A function pickled once by the caller; each worker unpickles it once and keeps it by ``key``."""

    key: str
    payload: bytes


class TaskWorker(Worker):
    """A worker that runs whatever function you hand it, like an executor of ``concurrent.futures``.

    ``TaskWorker.options(mode="process", max_workers=4).init()`` gives a handle with
    ``submit(fn, *args, **kwargs) -> Future`` and ``map(fn, *iterables)``, in any
    mode and with every option a worker has (retries, limits, on-demand, ...).
    ``async def`` functions run on the worker's event loop. Retry options per
    method name ``"submit"`` (plain functions) and ``"submit_async"``.

    In process and Ray mode a function is pickled once per handle (by identity),
    and unpickled once per worker, not once per call; so, as with Ray's remote
    functions, later changes to the globals it captured are not seen by workers.
    Use :func:`task` to bind one function to its own workers.
    """

    def __init__(self, fn: Optional[Callable] = None) -> None:
        self._bound = fn
        self._loaded: OrderedDict[str, Callable] = OrderedDict()

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in this worker (``fn=None``: the function bound by ``@task``)."""
        return self._callable(fn)(*args, **kwargs)

    async def submit_async(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Await ``fn(*args, **kwargs)`` on this worker's event loop."""
        return await self._callable(fn)(*args, **kwargs)

    def _callable(self, fn: Any) -> Callable:
        if fn is None:
            if self._bound is None:
                raise TypeError("submit() needs a function to run: submit(fn, *args, **kwargs)")
            return self._bound
        if isinstance(fn, ShippedFunction):
            return self._load(fn)
        return fn

    def _load(self, shipped: ShippedFunction) -> Callable:
        fn = self._loaded.get(shipped.key)
        if fn is None:
            fn = self._loaded[shipped.key] = cloudpickle.loads(shipped.payload)
            if len(self._loaded) > LOADED_FUNCTIONS:
                self._loaded.popitem(last=False)
        return fn

    @classmethod
    def __concurry_handle__(cls) -> type:
        return TaskPool


class TaskPool(Pool, concurrent.futures.Executor):
    """The handle of TaskWorker workers: ``submit(fn, ...)`` and ``map(fn, *iterables)``.

    It is also a :class:`concurrent.futures.Executor` (``shutdown``, ``with``,
    ``loop.run_in_executor(handle, fn, *args)``); see :func:`Executor`.
    """

    OWN_NAMES = Pool.OWN_NAMES | {"map", "shutdown"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._issued: weakref.WeakSet = weakref.WeakSet()  # futures handed out, for shutdown(cancel_futures=True)
        self._issued_lock = threading.Lock()

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on a worker; its Future (or its value with ``blocking=True``)."""
        method, shipped = self._shipped(fn)
        return self._call(method, (shipped, *args), kwargs)

    def map(
        self,
        fn: Callable,
        *iterables: Iterable,
        timeout: Optional[float] = None,
        chunksize: int = 1,
        buffersize: Optional[int] = None,
        progress: Any = False,
    ) -> Iterator:
        """``fn`` applied to the items of ``iterables`` (zipped) on every worker; results in input order.

        Items are spread over all the pool's workers (on-demand pools start
        workers up to their cap). At most ``buffersize`` items are in flight
        (default: 4 per worker, at least 64), so a huge or endless iterable is
        read only as results are consumed. ``timeout`` bounds the whole map from
        this call, raising TimeoutError when a result is not ready in time. The
        first failed item raises its exception when reached; items still in
        flight are then cancelled. ``progress=True`` (or a dict of ProgressBar
        options) shows a progress bar. ``chunksize`` is accepted for
        ``concurrent.futures.Executor.map`` compatibility; items travel one per call.
        """
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize={chunksize!r} must be an int >= 1")
        method, shipped = self._shipped(fn)
        return self._map(method, shipped, iterables, timeout, buffersize, progress)

    def _map(
        self, method: str, fn: Any, iterables: tuple, timeout: Optional[float], buffersize: Optional[int], progress: Any
    ) -> Iterator:
        if buffersize is not None and buffersize < 1:
            raise ValueError(f"buffersize={buffersize!r} must be >= 1 (or None for 4 per worker)")
        window = buffersize or max(64, 4 * self._options.worker_cap)
        bar = _progress_bar(progress, iterables)
        submit = functools.partial(self._item_future, method, fn)
        return ordered_results(submit, zip(*iterables), window, timeout, bar)

    def _item_future(self, method: str, fn: Any, item: tuple) -> Future:
        return self._future(method, (fn, *item), {})

    def _call(self, method: str, args: tuple, kwargs: dict) -> Any:
        return self._submit(method, args, kwargs)

    def _future(self, method: str, args: tuple, kwargs: dict) -> Future:
        """Dispatch a call and return its Future, also on a blocking handle (map needs futures)."""
        return self._submit_future(method, args, kwargs)

    def _submit_future(self, method: str, args: tuple, kwargs: dict, priority: int = 0) -> Future:
        future = super()._submit_future(method, args, kwargs, priority)
        with self._issued_lock:
            self._issued.add(future)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """:meth:`concurrent.futures.Executor.shutdown`: refuse new calls, then stop the workers.

        ``cancel_futures=True`` first cancels every call made through this handle
        that has not started running. ``wait=True`` returns once the calls left
        have finished and the workers are stopped (as ``stop()``); ``wait=False``
        returns at once and lets that happen in the background.
        """
        if cancel_futures:
            with self._issued_lock:
                issued = list(self._issued)
            for future in issued:
                future.cancel()
        if wait:
            self.stop()
        elif self._refuse_calls():
            threading.Thread(target=self._wind_down, args=(None,), name="concurry-shutdown", daemon=True).start()

    def _shipped(self, fn: Callable) -> tuple[str, Any]:
        """The worker method for ``fn`` and the form in which ``fn`` travels to the workers."""
        if not callable(fn):
            raise TypeError(f"expected a function to run, got {type(fn).__name__}: {fn!r}")
        method = "submit_async" if is_async_callable(fn) else "submit"
        if not self._backend.crosses_process:
            return method, fn
        registry = self.__dict__.setdefault("_functions", weakref.WeakKeyDictionary())
        return method, _ship(registry, fn)


def _ship(registry: weakref.WeakKeyDictionary, fn: Callable) -> Any:
    """``fn`` pickled once per handle; unhashable or unpicklable callables travel as they are."""
    try:
        shipped = registry.get(fn)
    except TypeError:
        return fn
    if shipped is None:
        try:
            payload = cloudpickle.dumps(fn)
        except Exception:
            return fn  # the backend reports it like any unpicklable argument
        shipped = registry[fn] = ShippedFunction(uuid.uuid4().hex, payload)
    return shipped


def is_async_callable(fn: Any) -> bool:
    """Whether calling ``fn`` returns a coroutine (looking through decorators and partials)."""
    target = inspect.unwrap(fn)
    while isinstance(target, functools.partial):
        target = inspect.unwrap(target.func)
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None))


def _progress_bar(progress: Any, iterables: tuple) -> ProgressBar:
    options = progress if isinstance(progress, dict) else {}
    sizes = [len(it) for it in iterables if hasattr(it, "__len__")]
    total = min(sizes) if sizes and len(sizes) == len(iterables) else None
    return ProgressBar(**{"total": total, "desc": "map", "disable": not progress, **options})


def ordered_results(
    submit: Callable[[tuple], Future], items: Iterator[tuple], window: int, timeout: Optional[float], bar: ProgressBar
) -> Iterator:
    """Submit the first ``window`` items now; the returned iterator yields results in order, topping up as it goes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pending = deque(submit(item) for item in itertools.islice(items, window))
    return _drain(submit, items, pending, deadline, bar)


def _drain(submit: Callable, items: Iterator, pending: deque, deadline: Optional[float], bar: ProgressBar) -> Iterator:
    try:
        while pending:
            result = pending[0].result(seconds_left(deadline))
            pending.popleft()
            pending.extend(submit(item) for item in itertools.islice(items, 1))
            bar.update(1)
            yield result
        bar.success()
    except Exception:
        bar.failure()
        raise
    finally:
        for future in pending:
            future.cancel()
        bar.close()


class Task:
    """A function that runs on its own workers: what ``@task`` returns.

    Call it to submit (a Future, or the value with ``blocking=True``), ``map``
    it over iterables, and ``stop()`` it (or use it in a ``with`` block) to
    release its workers. The workers start on first use, not at decoration, and
    start again if the task is used after ``stop()``.
    """

    def __init__(self, fn: Callable, builder: WorkerBuilder) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._builder = builder
        self._method = "submit_async" if is_async_callable(fn) else "submit"
        self._pool: Optional[TaskPool] = None
        self._lock = threading.Lock()

    def _handle(self) -> TaskPool:
        with self._lock:
            if self._pool is None:
                self._pool = self._builder.init(self._fn)
            return self._pool

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the function with these arguments on a worker: a Future (the value with ``blocking=True``)."""
        return self._handle()._call(self._method, (None, *args), kwargs)

    submit = __call__

    def map(
        self,
        *iterables: Iterable,
        timeout: Optional[float] = None,
        buffersize: Optional[int] = None,
        progress: Any = False,
    ) -> Iterator:
        """The function applied to the items of ``iterables`` on every worker, in input order (see TaskPool.map)."""
        return self._handle()._map(self._method, None, iterables, timeout, buffersize, progress)

    def get_pool_stats(self) -> dict:
        """Statistics of the task's workers (starting them if needed)."""
        return self._handle().get_pool_stats()

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stop the task's workers; calls already made finish first (see Pool.stop)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop(timeout)

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "not started" if self._pool is None else repr(self._pool)
        return f"<task {self.__qualname__} {self._builder.options.mode!r}: {state}>"

    def _repr_html_(self) -> str:
        """The task's workers as a small table in a notebook (see ``Pool``); showing it starts none."""
        title, workers = f"task {self.__qualname__}", self._pool
        if workers is None:
            return pool_html(title, {"mode": self._builder.options.mode}, state="not started")
        return pool_html(title, read_stats(workers.get_pool_stats))


def Executor(  # noqa: N802 - named like the class it stands for, as in concurry
    mode: Any = None,
    max_workers: Optional[int] = None,
    load_balancing: Any = None,
    on_demand: Optional[bool] = None,
    limits: Any = None,
    **options: Any,
) -> TaskPool:
    """A :class:`concurrent.futures.Executor` that runs functions on concurry_ray workers.

    ``Executor(mode="process", max_workers=4)`` is ``TaskWorker.options(mode="process",
    max_workers=4).init()``: the handle has ``submit(fn, *args, **kwargs)``,
    ``map(fn, *iterables, timeout=None, chunksize=1)`` and ``shutdown(wait=True,
    cancel_futures=False)``, works in a ``with`` block and with
    ``asyncio.get_running_loop().run_in_executor(executor, fn, *args)``, and takes
    every option of ``Worker.options()`` (retries, limits, ``actor_options``, ...).
    Arguments left as None take their defaults (``mode`` from ``global_config``).
    """
    given = dict(mode=mode, max_workers=max_workers, load_balancing=load_balancing, on_demand=on_demand, limits=limits)
    return TaskWorker.options(**{k: v for k, v in given.items() if v is not None}, **options).init()


def task(fn: Optional[Callable] = None, /, **options: Any) -> Any:
    """Turn a function into a :class:`Task` that runs on workers.

    Use it bare (``@task``) or with options (``@task(mode="process", max_workers=4)``).

    ``options`` are those of ``Worker.options()`` and are validated here. The
    workers start on the first call, each built with the function, so it is
    pickled once per worker rather than once per call.
    """
    if fn is None:
        return lambda function: task(function, **options)
    return Task(fn, TaskWorker.options(**options))
