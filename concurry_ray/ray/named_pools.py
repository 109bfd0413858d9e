"""Named Ray pools: creating or attaching by name, finding one from anywhere, removing one.

A Ray pool's balancer actor is named ``{pool}/balancer`` in the ``concurry_ray``
namespace (see ``naming``). With the ``name`` option, ``.init()`` gets or
creates that actor (Ray's get-if-exists, so two drivers racing create one): the
handle that created it starts the workers; any other attaches, provided the
definitions (class and options) match. ``lifetime="detached"`` gives the balancer
Ray's detached lifetime, so the pool (whose workers the balancer owns) outlives
every driver until :func:`remove_pool`.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import ray

from ..errors import ConfigError, PoolNotFoundError
from ..limits.holders import PoolOwner
from .balancer import LOOKUP_TIMEOUT, unwrap
from .membership import AttachInfo, attach_pool
from .limits_holder import remove_holder
from .naming import NAMESPACE, balancer_name, pool_of
from .outcomes import ensure_ray


def get_pool(name: str) -> Any:
    """A handle of the named Ray pool ``name``, attached from this process (a driver, task, actor or
    Serve replica); PoolNotFoundError if the cluster has no such pool."""
    balancer = find_balancer(name)
    asked_at = time.time()
    cls, options, extras, version, members = _ask(balancer, "attach_info")
    return attach_pool(AttachInfo(balancer, cls, options, extras, version, members, asked_at))


def remove_pool(name: str, timeout: Optional[float] = 60.0) -> int:
    """Drain the named pool ``name`` (each worker finishes the calls sent to it, for at most
    ``timeout`` seconds) and end its actors. Returns how many workers had to be killed at the
    deadline. Handles still attached elsewhere fail their later calls with PoolStoppedError."""
    balancer = find_balancer(name)
    try:
        seconds = LOOKUP_TIMEOUT if timeout is None else timeout
        killed = _ask(balancer, "drain", seconds, timeout=LOOKUP_TIMEOUT + seconds)
    finally:
        ray.kill(balancer, no_restart=True)
        remove_holder(PoolOwner(name).holder_name)  # the budget of its limits=[...], if it has one
    return killed


def find_balancer(name: str) -> Any:
    """The balancer actor of the named pool ``name``; PoolNotFoundError listing the pools there are."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name={name!r} must be a pool's name (a non-empty string)")
    ensure_ray()
    try:
        return ray.get_actor(balancer_name(name), namespace=NAMESPACE)
    except ValueError:
        known = ", ".join(repr(p) for p in list_pools()) or "none"
        raise PoolNotFoundError(f"there is no Ray pool named {name!r} in this cluster (pools: {known})") from None


def list_pools() -> list[str]:
    """The names of every pool whose balancer is alive in the cluster, sorted."""
    actors = ray.util.list_named_actors(all_namespaces=True)
    return sorted(p for a in actors if a["namespace"] == NAMESPACE and (p := pool_of(a["name"])) is not None)


def _ask(balancer: Any, method: str, *args: Any, timeout: float = LOOKUP_TIMEOUT) -> Any:
    try:
        return ray.get(getattr(balancer, method).remote(*args), timeout=timeout)
    except Exception as exc:
        raise unwrap(exc) from None
