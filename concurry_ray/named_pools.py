"""Named pools, found by name from anywhere in a Ray cluster (``get_pool``) and ended by name (``remove_pool``).

A pool gets a name with ``.options(mode="ray", name="embedder")``, and outlives its
driver with ``lifetime="detached"`` as well. These functions import Ray only when called.
"""

from __future__ import annotations

from typing import Any, Optional


def get_pool(name: str) -> Any:
    """A handle of the Ray pool named ``name``, from any driver, job, task, actor or Serve replica
    of the cluster, without knowing its class; it dispatches into the same workers as every other
    handle, and its ``stop()`` detaches this handle only. ``PoolNotFoundError`` if there is no such pool."""
    from .ray.named_pools import get_pool as attach

    return attach(name)


def remove_pool(name: str, timeout: Optional[float] = 60.0) -> int:
    """End the Ray pool named ``name``: each worker finishes the calls already sent to it (for at
    most ``timeout`` seconds, then it is killed), then its actors go. Returns how many workers had
    to be killed. Handles still attached fail later calls with ``PoolStoppedError``.
    ``PoolNotFoundError`` if there is no such pool."""
    from .ray.named_pools import remove_pool as remove

    return remove(name, timeout)
