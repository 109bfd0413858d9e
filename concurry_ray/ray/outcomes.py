"""Turning Ray ObjectRefs into concurry_ray Futures, with Ray's error wrappers removed.

:data:`ADAPTER` is how ``concurry_ray.futures`` (which knows no backend) takes
an ObjectRef wherever it takes a future: ``wrap_future(ref)``, ``wait``,
``gather``, an argument of a pool call. It is registered by where it lives and
loaded the first time one is needed once ``ray`` has been imported (see
``concurry_ray.future_types``), so a program without Ray never imports this.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from typing import Any, Callable, Optional

import ray
from ray import exceptions as rex

from ..errors import SerializationError, WorkerCrashedError
from ..futures import Adapter, Future, Stored, settle
from .callback_thread import keep_thread_state
from .compat import on_completed

log = logging.getLogger("concurry_ray")


def ensure_ray() -> None:
    """Start (or connect to, via RAY_ADDRESS) a Ray runtime if none is initialised in this process."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    log.warning(
        "concurry_ray: no Ray runtime initialised; %s", f"connecting to {address}" if address else "starting a local one"
    )
    ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING, ignore_reinit_error=True)


def unwrap_ray_error(error: BaseException, label: str = "Ray actor") -> BaseException:
    """The user's exception inside Ray's wrappers, or a WorkerCrashedError for a dead actor."""
    if isinstance(error, rex.RayTaskError):
        cause = error.cause if getattr(error, "cause", None) is not None else error
        if isinstance(cause, rex.RayError) and cause is not error:
            return unwrap_ray_error(cause, label)
        if isinstance(cause, TypeError) and "cloudpickle" in str(error):
            return SerializationError(f"the result of a call on {label} cannot be pickled: {cause}")
        return cause
    if isinstance(error, (rex.ActorDiedError, rex.ActorUnavailableError, rex.RayActorError)):
        return WorkerCrashedError(f"{label} died: {_first_line(error)}")
    return error


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return " ".join(line.strip() for line in text[:3])


def when_done(ref: "ray.ObjectRef", callback: Callable[[Any, Optional[BaseException]], None]) -> None:
    """Call ``callback(value, error)`` once ``ref`` is ready, on Ray's callback thread (see ``compat.on_completed``).

    ``ref`` is kept alive until the callback has run: an error whose ref dies unread
    is reported "unhandled".
    """

    def deliver(result: Any, _keep_alive: Any = ref) -> None:
        keep_thread_state()
        if isinstance(result, rex.RayError):
            callback(None, result)
        else:
            callback(result, None)

    on_completed(ref, deliver)


def future_from_ref(ref: "ray.ObjectRef", label: str = "Ray actor") -> Future:
    """A Future settled when ``ref`` is; it keeps the ref (``native``) so it can be passed on unresolved."""
    future = Future()
    future.native = ref
    future.set_running_or_notify_cancel()
    when_done(ref, lambda value, error: settle(future, value, error and unwrap_ray_error(error, label)))
    return future


def stored_value(ref: "ray.ObjectRef", label: str = "Ray actor") -> Stored:
    """The Stored result of a call whose value is still in the object store under ``ref``."""

    def fetch(timeout: Optional[float]) -> Any:
        try:
            return ray.get(ref, timeout=timeout)
        except rex.GetTimeoutError:
            raise cf.TimeoutError(f"the result of a call on {label} was not fetched within {timeout}s") from None
        except rex.RayError as error:
            raise unwrap_ray_error(error, label) from None

    async def fetch_async() -> Any:
        try:
            return await ref
        except rex.RayError as error:
            raise unwrap_ray_error(error, label) from None

    return Stored(fetch, fetch_async)


ADAPTER = Adapter(ray.ObjectRef, future_from_ref)
"""ObjectRefs for ``concurry_ray.futures``: each becomes a Future settled when Ray has the value."""
