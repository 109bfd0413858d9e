"""The host: the object that runs a user's worker inside any execution context.

Every backend builds one :class:`Host` per worker, in the thread, process or Ray
actor where the worker lives, and hands it calls. The host instantiates the
user's class (plain, ``morphic.Typed`` or ``pydantic.BaseModel``), gives it
``self.limits``, runs sync methods directly and async methods on the worker's
one event loop, and applies the retry policy. Backends only move calls in and
outcomes out, so a worker behaves the same in every mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import traceback
from concurrent.futures import Future as _CFuture
from typing import Any, Callable, Optional

from .errors import SerializationError, WorkerInitError, attach_remote_traceback
from .methods import is_async_method, public_methods
from .protocol import Call, WorkerSpec
from .tracing import call_attributes, consuming, worker_number

_BUILDING = contextvars.ContextVar("concurry_ray_building_worker", default=False)


def building_worker() -> bool:
    """True while a host creates a worker instance (so ``Worker.__new__`` must not start another handle)."""
    return _BUILDING.get()


class LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coroutine) -> _CFuture:
        """Schedule a coroutine on the loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def stop(self) -> None:
        """Cancel the tasks still on the loop (their coroutines see CancelledError), stop it, let its thread end."""
        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self.submit(_cancel_other_tasks()).result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


async def _cancel_other_tasks() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=2)


class Host:
    """Owns one instance of the user's class and runs calls on it.

    ``loop`` is the worker's event loop when the backend already runs one (asyncio
    mode, Ray actors); otherwise a private loop thread is started on the first
    async call.
    """

    def __init__(self, spec: WorkerSpec, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.spec = spec
        self.label = spec.label
        self._loop = loop
        self._loop_thread: Optional[LoopThread] = None
        self._methods = frozenset(public_methods(spec.cls))
        limits = spec.extras.get("limits")
        self.limits = limits.for_worker() if limits is not None else None
        self.instance = self._build(spec)
        from .retry import RetryRunner

        self._retry = RetryRunner(spec.options, type(self.instance), self.limits_of())

    def _build(self, spec: WorkerSpec) -> Any:
        cls = spec.cls
        limits = self.limits
        try:
            instance = _new_instance(cls)
            _set_limits(instance, limits)
            instance.__init__(*spec.args, **spec.kwargs)
        except BaseException as exc:
            raise WorkerInitError(
                f"{cls.__name__}.__init__ raised {type(exc).__name__}: {exc} ({self.label}); "
                "fix the constructor arguments or the constructor"
            ) from exc
        _set_limits(instance, limits)
        return instance

    @property
    def retries(self) -> int:
        """Extra attempts this worker has made so far (all methods)."""
        return self._retry.retries

    def limits_of(self) -> Any:
        """The LimitSet the worker sees as ``self.limits`` (None without limits)."""
        return self.limits

    def is_async(self, method: str) -> bool:
        """Whether ``method`` is an ``async def`` on the user's class."""
        return is_async_method(type(self.instance), method)

    def method(self, name: str) -> Any:
        """The bound public method ``name``; AttributeError for any other name (private ones included),
        whoever sent the call."""
        if name not in self._methods:
            raise AttributeError(f"{type(self.instance).__name__} has no public method {name!r} ({self.label})")
        return getattr(self.instance, name)

    def run(self, call: Call) -> Any:
        """Run a sync method (with retries) and return its value or raise; a traced call
        runs inside its CONSUMER span."""
        bound = self.method(call.method)
        if call.trace is not None:
            with self._span(call):
                return self._retry.run(call, bound)
        if call.method in self._retry.run_once:  # the hot path: no retry runner in between
            return bound(*call.args, **call.kwargs)
        return self._retry.run(call, bound)

    async def run_async(self, call: Call) -> Any:
        """Run an async method (with retries) on the current event loop; a traced call
        runs inside its CONSUMER span."""
        bound = self.method(call.method)
        if call.trace is None:
            return await self._retry.run_async(call, bound)
        with self._span(call):
            return await self._retry.run_async(call, bound)

    def _span(self, call: Call) -> Any:
        """The CONSUMER span of a traced call (see ``concurry_ray.tracing``), as a context manager."""
        spec, name = self.spec, self.spec.cls.__name__
        attributes = call_attributes(spec.options, name, call.method, worker_number(spec.label))
        return consuming(call.trace, f"{name}.{call.method}", attributes)

    def run_on_loop(self, call: Call) -> _CFuture:
        """Schedule an async method on the worker's loop; a concurrent future of its outcome."""
        if self._loop is not None:
            return asyncio.run_coroutine_threadsafe(self.run_async(call), self._loop)
        if self._loop_thread is None:
            self._loop_thread = LoopThread(f"{self.label}-loop")
        return self._loop_thread.submit(self.run_async(call))

    def close(self) -> None:
        """Stop the private loop thread, if one was started."""
        if self._loop_thread is not None:
            self._loop_thread.stop()


def _new_instance(cls: type) -> Any:
    token = _BUILDING.set(True)
    try:
        return cls.__new__(cls)
    finally:
        _BUILDING.reset(token)


def _set_limits(instance: Any, limits: Any) -> None:
    # object.__setattr__ because pydantic models reject unknown attributes and
    # replace __dict__ in __init__ (hence set before and after the constructor).
    try:
        object.__setattr__(instance, "_concurry_limits", limits)
    except (AttributeError, TypeError):
        pass


def portable_error(exc: BaseException, where: str, dumps: Callable[[Any], bytes]) -> BaseException:
    """The exception to send across a process boundary: the original with its traceback
    text attached, or a SerializationError when it cannot be pickled."""
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    attach_remote_traceback(exc, tb_text, where)
    try:
        dumps(exc)
        return exc
    except Exception as pickling_error:
        return SerializationError(
            f"{type(exc).__name__} raised in {where} cannot be pickled ({pickling_error}); "
            f"its message was: {exc}\n{tb_text}"
        )


def describe_unpicklable(what: str, value: Any, error: BaseException, where: str) -> SerializationError:
    """A SerializationError naming what could not be pickled and why."""
    return SerializationError(
        f"{what} of type {type(value).__name__} cannot be pickled for {where}: {error}. "
        "Send picklable data (cloudpickle handles lambdas and local classes, not locks, sockets or open files)."
    )


def unpicklable_argument(call: Call, error: Any, where: str) -> SerializationError:
    """A SerializationError naming the argument of ``call`` that cannot be pickled, and its type."""
    import cloudpickle

    named = [(f"argument {i}", v) for i, v in enumerate(call.args)] + [(f"argument {k}=", v) for k, v in call.kwargs.items()]
    for name, value in named:
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            return describe_unpicklable(f"{name} of {call.method}()", value, exc, where)
    return describe_unpicklable(f"the arguments of {call.method}()", call.args, error, where)


def init_failure(exc: WorkerInitError, where: str, dumps: Callable[[Any], bytes]) -> tuple[str, BaseException]:
    """What to send back when the constructor failed: the message and the portable cause."""
    return str(exc), portable_error(exc.__cause__ or exc, where, dumps)


def rebuild_init_error(message: str, cause: BaseException) -> WorkerInitError:
    """The WorkerInitError a client raises, with the constructor's exception as ``__cause__``."""
    error = WorkerInitError(message)
    error.__cause__ = cause
    return error
