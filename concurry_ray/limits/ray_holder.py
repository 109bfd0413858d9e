"""The Ray-mode holder: a named detached actor that serves one ledger to the whole cluster.

The actor lives in the namespace ``concurry_ray`` under the set's name (a
generated ``limits-<id>`` when unnamed) and is created with get-if-exists
semantics, so every driver, job or Serve replica that builds a LimitSet of that
name attaches to the same budget. It needs no CPU. Calls do not go through Ray
actor methods: the actor runs a :class:`~.server.Server` on its node's address,
and each process talks to it over one direct connection, a single network round
trip per acquisition and none per release. Ray is used to create, find and
restart the holder. A holder that Ray restarts starts conservatively: every rate
limit as if just used up, resources closed for a grace period while the clients
reconnect and report the grants they still hold.
"""

from __future__ import annotations

import atexit
import uuid
import warnings
from functools import partial
from typing import Any, Optional, Sequence

from .client import RemoteHolder, client_for
from .holders import EVERY_MODE, Holder, check_same
from .ledger import Ledger
from .models import definition
from .server import Server

NAMESPACE = "concurry_ray"
RESTART_GRACE = 5.0  # seconds resources stay closed after a restart while clients report what they hold
LOCATE_TIMEOUT = 60.0

_ACTOR: Any = None


class LimitsHolder:
    """The body of the detached actor: a ledger and the server in front of it."""

    def __init__(self, limits: Sequence) -> None:
        import ray

        self._limits = tuple(limits)
        ledger = Ledger(self._limits)
        if _restarted():
            ledger.saturate(RESTART_GRACE)
        self._server = Server(ledger, host=ray.util.get_node_ip_address())

    def definition(self) -> list:
        """The limits this holder enforces, comparable with ``models.definition``."""
        return definition(self._limits)

    def locator(self) -> tuple:
        """Where clients connect: (address, family, authkey)."""
        return self._server.locator


def _restarted() -> bool:
    import ray

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray 2.60 flags its own internal use of a deprecated call
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def _actor_class() -> Any:
    global _ACTOR
    if _ACTOR is None:
        import ray

        _ACTOR = ray.remote(LimitsHolder)
    return _ACTOR


class RayHolder(RemoteHolder):
    """A client of a holder actor; ``close()`` kills the actor (and its budget) for everyone."""

    def close(self) -> None:
        remove_holder(self.key)


def locate(name: str) -> tuple:
    """Find the holder actor ``name`` (waiting while Ray restarts it) and return its locator."""
    import ray

    actor = ray.get_actor(name, namespace=NAMESPACE)
    return ray.get(actor.locator.remote(), timeout=LOCATE_TIMEOUT)


def remove_holder(name: str) -> bool:
    """Kill the holder actor ``name``; False if there was none."""
    import ray

    try:
        actor = ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor, no_restart=True)
    return True


def list_holders() -> list[str]:
    """Names of the limits holders alive on the connected Ray cluster."""
    import ray

    return sorted(entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True) if entry["namespace"] == NAMESPACE)


def open_ray(limits: Sequence, name: Optional[str]) -> Holder:
    """Create (or attach to) the holder actor of a shared set in Ray mode."""
    import ray

    from ..ray.outcomes import ensure_ray

    ensure_ray()
    if name is None:
        name = f"limits-{uuid.uuid4().hex[:12]}"
        atexit.register(_remove_quietly, name)
    actor = _actor_class().options(
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1
    ).remote(tuple(limits))
    existing, locator = ray.get([actor.definition.remote(), actor.locator.remote()], timeout=LOCATE_TIMEOUT)
    check_same(name, existing, definition(limits))
    return client_for(RayHolder, name, locator, partial(locate, name), EVERY_MODE)


def _remove_quietly(name: str) -> None:
    try:
        remove_holder(name)
    except Exception:  # the runtime may be gone at exit; the CLI cleans what is left
        pass
