"""The Worker base class, the builder returned by ``Worker.options()``, and the ``@worker`` decorator."""

from __future__ import annotations

import types
from typing import Any, Callable, ClassVar, Optional

from .host import building_worker
from .options import WorkerOptions, build_options
from .pools.handle import Pool


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

    Options may also be given once for the class, as class keywords
    (``class W(Worker, mode="thread", max_workers=4)``) or with :func:`worker`;
    they become the defaults of ``W.options()``, and calling ``W(...)`` then
    starts a worker and returns its handle (``auto_init=False`` turns that off).
    """

    _concurry_defaults: ClassVar[dict] = {}
    _concurry_auto_init: ClassVar[bool] = False

    def __init_subclass__(cls, auto_init: Optional[bool] = None, **options: Any) -> None:
        super().__init_subclass__()
        _guard_options_method(cls)
        _configure(cls, options, auto_init)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """``Cls(*args)`` on a class with ``auto_init`` is ``Cls.options().init(*args)``: a handle, not an instance."""
        if cls._concurry_auto_init and not building_worker():
            return cls.options().init(*args, **kwargs)
        parent_new = super().__new__
        return parent_new(cls) if parent_new is object.__new__ else parent_new(cls, *args, **kwargs)

    @classmethod
    def options(cls, **options: Any) -> "WorkerBuilder":
        """Validate options (raising ConfigError on a bad one) and return a builder.

        Options given here override the class's own (class keywords, ``@worker``).
        ConfigError also when a method of the class takes a name the handle keeps for itself.
        """
        cls.__concurry_handle__().check_worker_class(cls)
        return WorkerBuilder(cls, build_options(**{**cls._concurry_defaults, **options}))

    @classmethod
    def __concurry_handle__(cls) -> type:
        """The handle type ``init()`` returns; subclasses such as TaskWorker return a richer one."""
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
        return self.cls.__concurry_handle__()(self.cls, self.options, args, kwargs)

    def __repr__(self) -> str:
        changed = self.options.model_dump(exclude_defaults=True)
        return f"<WorkerBuilder {self.cls.__name__} {changed}>"


def worker(cls: Optional[type] = None, /, *, auto_init: Optional[bool] = None, **options: Any) -> Any:
    """Class decorator: make ``cls`` a :class:`Worker` whose ``options()`` start from ``options``.

    Use it bare (``@worker``) or with options (``@worker(mode="process", max_workers=4)``);
    the options are those of ``Worker.options()`` and are validated here (ConfigError
    naming a bad value). A class that is not a Worker subclass yet becomes one. With
    options, calling the class (``MyClass(*args)``) starts a worker with them and
    returns its handle, unless ``auto_init=False``; ``MyClass.options(...)`` still
    works and overrides them one by one.
    """
    if cls is None:
        return lambda target: worker(target, auto_init=auto_init, **options)
    target = cls if issubclass(cls, Worker) else _as_worker(cls)
    _configure(target, options, auto_init)
    return target


def _as_worker(cls: type) -> type:
    """A subclass of Worker and ``cls``, standing in for ``cls`` under its own name."""
    own = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
    return types.new_class(cls.__name__, (Worker, cls), {}, lambda namespace: namespace.update(own))


def _configure(cls: type, options: dict, auto_init: Optional[bool]) -> None:
    """Make ``options`` the defaults of ``cls.options()`` (merged over inherited ones), checked now.

    The one code path of class keywords and ``@worker``. Calling the class starts a
    worker when ``auto_init`` says so, by default whenever options were given.
    """
    if not options and auto_init is None:
        return
    defaults = {**cls._concurry_defaults, **options}
    build_options(**defaults)
    cls._concurry_defaults = defaults
    cls._concurry_auto_init = True if auto_init is None else bool(auto_init)


def _guard_options_method(cls: type) -> None:
    """A class that defines its own ``options`` method keeps it on instances; ``cls.options(...)``
    then raises the ConfigError that explains the clash (``options`` is the handle's own name)."""
    own = cls.__dict__.get("options")
    if callable(own) and not isinstance(own, classmethod):
        cls.options = _ShadowedOptions(own)


class _ShadowedOptions:
    """Stands in for a worker class's own ``options`` method (see :func:`_guard_options_method`)."""

    def __init__(self, method: Callable) -> None:
        self.method = method

    def __get__(self, instance: Any, owner: Optional[type] = None) -> Any:
        if instance is None:
            return lambda *args, **kwargs: owner.__concurry_handle__().check_worker_class(owner, ["options"])
        return self.method.__get__(instance, owner)
