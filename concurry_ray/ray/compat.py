"""Every Ray-private API this package uses, each behind a check with a public fallback.

Ray is a range of releases here (see "Supported versions" in the docs), so nothing may
assume a private name exists: when a release drops one, the public fallback takes over.

- ``ObjectRef._on_completed`` (what Ray's own ``ref.future()`` is built on): registering
  it directly saves a ``concurrent.futures.Future`` and its lock per call on the hot path.
  Fallback: ``ref.future().add_done_callback``.
- ``RuntimeContext.worker.mode`` (undocumented): whether this process is a Ray worker.
  Fallback: ``get_task_id()``, which is None outside a task (Ray logs a warning when a
  driver asks).

``RuntimeContext.was_current_actor_reconstructed`` is public, but Ray's own code in it uses a
deprecated name and warns; ``actor_was_restarted`` quiets that.

Ray's table of actor option names is read behind its own check in ``option_names``, which
must not import Ray.
"""

from __future__ import annotations

import concurrent.futures as cf
import warnings
from typing import Any, Callable

import ray

HAS_ON_COMPLETED = hasattr(ray.ObjectRef, "_on_completed")


def on_completed(ref: "ray.ObjectRef", callback: Callable[[Any], None]) -> None:
    """Call ``callback(result)`` once ``ref`` is ready: its value, or the ``RayError`` it holds.

    Ray calls it on its callback thread; with the fallback, a ref that is ready by the time
    the callback is added has it called at once on the calling thread.
    """
    if HAS_ON_COMPLETED:
        ref._on_completed(callback)
    else:
        ref.future().add_done_callback(lambda future: callback(_outcome(future)))


def _outcome(future: cf.Future) -> Any:
    error = future.exception()
    return future.result() if error is None else error


def actor_was_restarted() -> bool:
    """True in an actor that Ray has restarted (called in the actor's constructor)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # recent releases flag Ray's own use of a deprecated name in it
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def in_ray_worker() -> bool:
    """True inside a Ray task or actor, False in a driver (Ray must be initialised)."""
    context = ray.get_runtime_context()
    mode = getattr(getattr(context, "worker", None), "mode", None)
    if mode is not None and hasattr(ray, "WORKER_MODE"):
        return mode == ray.WORKER_MODE
    return context.get_task_id() is not None
