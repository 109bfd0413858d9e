"""The Worker base class and the builder returned by ``Worker.options()``."""

from __future__ import annotations

from typing import Any

from .options import WorkerOptions, build_options


class Worker:
    """Base class of every concurry_ray worker.

    A *worker* is an ordinary class whose instance lives in an execution context
    of your choice: the caller's thread (``sync``), an event loop (``asyncio``),
    a thread, a process, or a Ray actor (``ray``). You write plain methods (sync
    or ``async def``); ``MyWorker.options(mode=..., max_workers=...).init(...)``
    builds the instance there and returns a handle on which every public method
    returns a :class:`~concurry_ray.Future`. With ``max_workers > 1`` the handle
    is a pool that looks exactly like a single worker.

    Each worker keeps its own state; nothing is shared between workers except
    through ``self.limits`` (the LimitSet given with ``limits=``). Subclasses may
    also inherit from ``morphic.Typed`` or ``pydantic.BaseModel``.
    """

    @classmethod
    def options(cls, **options: Any) -> "WorkerBuilder":
        """Validate options (raising ConfigError on a bad one) and return a builder."""
        return WorkerBuilder(cls, build_options(**options))

    @classmethod
    def _handle_class(cls) -> type:
        """The handle type ``init()`` returns; subclasses such as TaskWorker return a richer one."""
        from .pool import Pool

        return Pool

    @property
    def limits(self) -> Any:
        """The LimitSet shared with this worker's pool (an empty one without ``limits=``)."""
        limits = self.__dict__.get("_concurry_limits")
        if limits is None:
            from .limits import empty_limits

            return empty_limits()
        return limits


class WorkerBuilder:
    """Validated options for a worker class; ``init(*args, **kwargs)`` starts it."""

    def __init__(self, cls: type, options: WorkerOptions) -> None:
        self.cls = cls
        self.options = options

    def init(self, *args: Any, **kwargs: Any):
        """Start the worker (or pool) with these constructor arguments and return its handle.

        Raises WorkerInitError, with the constructor's exception as cause, if the
        constructor fails; in every mode this happens here, not on the first call.
        """
        return self.cls._handle_class()(self.cls, self.options, args, kwargs)

    def __repr__(self) -> str:
        changed = self.options.model_dump(exclude_defaults=True)
        return f"<WorkerBuilder {self.cls.__name__} {changed}>"
