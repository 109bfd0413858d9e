"""The Ray-mode holder: a named detached actor that serves one ledger to the whole cluster.

The actor lives in the namespace ``concurry_ray`` under the set's name (a
generated ``limits-<id>`` when unnamed) and is created with get-if-exists
semantics, so every driver, job or Serve replica that builds a LimitSet of that
name attaches to the same budget. It needs no CPU. Calls do not go through Ray
actor methods: the actor runs a :class:`~concurry_ray.limits.server.Server` on its node's address,
and each process talks to it over one direct connection, a single network round
trip per acquisition and none per release. Ray is used to create, find and
restart the holder. A holder that Ray restarts starts conservatively: every rate
limit as if just used up, resources closed for a grace period while the clients
reconnect and report the grants they still hold; a grant reported after that
is counted only if it still fits (its client is told the lease is gone
otherwise), so no capacity is ever exceeded.
"""

from __future__ import annotations

import atexit
import logging
import uuid
from functools import partial
from typing import Any, Optional, Sequence

import ray

from ..limits.client import RemoteHolder, client_for, forget
from ..limits.holders import EVERY_MODE, Holder, PoolOwner, check_same, usage_label
from ..limits.ledger import Ledger
from ..limits.models import definition
from ..limits.server import Server
from ..metrics import UsageMeter
from .compat import actor_was_restarted
from .naming import NAMESPACE, is_pool_actor
from .outcomes import ensure_ray

RESTART_GRACE = 3.0  # seconds resources stay closed after a restart while clients report what they hold
LOCATE_TIMEOUT = 60.0

_ACTOR: Any = None
_MADE_HERE: set[str] = set()  # unnamed holders this process created, removed when it exits
_HANDLES: dict[str, Any] = {}  # a handle of each holder this process opened: Ray ends an actor nobody holds


class LimitsHolder:
    """The body of the detached actor: a ledger and the server in front of it."""

    def __init__(self, limits: Sequence, pool: Optional[str], label: str) -> None:
        self._limits = tuple(limits)
        self._pool = pool
        ledger = Ledger(self._limits)
        if actor_was_restarted():
            ledger.saturate(RESTART_GRACE)
        self._server = Server(ledger, host=ray.util.get_node_ip_address())
        self._usage = UsageMeter(label, ledger.stats)

    def definition(self) -> list:
        """The limits this holder enforces, comparable with ``models.definition``."""
        return definition(self._limits)

    def locator(self) -> tuple:
        """Where clients connect: (address, family, authkey)."""
        return self._server.locator

    def about(self) -> dict:
        """The named pool this holder serves (None for a LimitSet's own) and how many processes are connected."""
        return {"pool": self._pool, "clients": self._server.clients}

    def stats(self) -> dict:
        """The budget's usage per key, as ``LimitSet.get_stats()`` reports it."""
        return self._server.ledger.stats()


def _actor_class() -> Any:
    global _ACTOR
    if _ACTOR is None:
        _ACTOR = ray.remote(LimitsHolder)
    return _ACTOR


class RayHolder(RemoteHolder):
    """A client of a holder actor; ``close()`` kills the actor (and its budget) for everyone."""

    def close(self) -> None:
        remove_holder(self.key)


def locate(name: str, seconds: float = LOCATE_TIMEOUT) -> tuple:
    """Find the holder actor ``name`` (waiting at most ``seconds`` while Ray restarts it) and return its locator."""
    actor = ray.get_actor(name, namespace=NAMESPACE)
    return ray.get(actor.locator.remote(), timeout=seconds)


def remove_holder(name: str) -> bool:
    """Kill the holder actor ``name`` (and drop this process's client of it); False if there was none."""
    _MADE_HERE.discard(name)
    _HANDLES.pop(name, None)
    forget(name)
    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor, no_restart=True)
    return True


def made_here() -> int:
    """How many unnamed holders this process created and has not removed (each pool with ``limits=[...]`` makes one)."""
    return len(_MADE_HERE)


def list_holders() -> list[str]:
    """Names of the limits holders alive on the connected Ray cluster."""
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(e["name"] for e in named if e["namespace"] == NAMESPACE and not is_pool_actor(e["name"]))


def open_ray(limits: Sequence, name: Optional[str], owner: Optional[PoolOwner] = None) -> Holder:
    """Create (or attach to) the holder actor of a shared set in Ray mode.

    A named set's holder is detached (others find the budget by name). A named pool's
    holder is ``{pool}/limits`` with the pool's lifetime; any other is owned by this process:
    it goes when the process goes, even on SIGKILL.
    """
    ensure_ray()
    label = usage_label(name, owner)
    lifetime = "detached" if name is not None else None
    if owner is not None:
        name, lifetime = owner.holder_name, owner.lifetime
    made_here = name is None  # others may attach to a named one: it is not this process's to remove at exit
    if made_here:
        name = f"limits-{uuid.uuid4().hex[:12]}"
    actor = _actor_class().options(
        name=name,
        namespace=NAMESPACE,
        lifetime=lifetime,
        get_if_exists=True,
        num_cpus=0,
        max_restarts=-1,
        max_task_retries=-1,
    ).remote(tuple(limits), owner.pool if owner is not None else None, label)
    _HANDLES.setdefault(name, actor)  # the first: a handle got from a name does not keep the actor alive
    if made_here:
        _remember(name)
    existing, locator = ray.get([actor.definition.remote(), actor.locator.remote()], timeout=LOCATE_TIMEOUT)
    check_same(name, existing, definition(limits))
    return client_for(RayHolder, name, locator, partial(locate, name), EVERY_MODE)


def _remember(name: str) -> None:
    if not _MADE_HERE:  # registered after ray.init, so it runs before Ray's own exit hook
        atexit.unregister(_remove_made_here)
        atexit.register(_remove_made_here)
    _MADE_HERE.add(name)


def _remove_made_here() -> None:
    if not ray.is_initialized():
        return  # the runtime is gone already; `list_holders()` finds what is left
    for name in list(_MADE_HERE):
        try:
            remove_holder(name)
        except Exception as exc:  # at exit, report and carry on with the others
            logging.getLogger("concurry_ray").warning("concurry_ray: could not remove limits holder %s: %s", name, exc)
