"""Names of the Ray actors the library creates, so that they are easy to find.

Every actor lives in the namespace ``concurry_ray``: a pool's balancer is
``{pool}/balancer``, its workers ``{pool}/w{i}`` and the holder of its
``limits=[...]`` ``{pool}/limits``, where ``{pool}`` is the pool's ``name``
option, or ``{Class}-{6 hex digits}`` for an unnamed pool; the holder of a
LimitSet is named after the set. ``ray list actors`` and the dashboard
show these names, and ``concurry-ray ls`` reads them back.
"""

from __future__ import annotations

import re
import uuid
from typing import Optional

NAMESPACE = "concurry_ray"
BALANCER_SUFFIX = "/balancer"
_POOL_ACTOR = re.compile(r"^(?P<pool>.+)/(?P<role>balancer|w\d+(~\d+)?)$")


def pool_name(name: Optional[str], cls: type) -> str:
    """The pool's name in actor names: its ``name`` option, else the class name and a short random id."""
    return name if name is not None else f"{cls.__name__}-{uuid.uuid4().hex[:6]}"


def balancer_name(pool: str) -> str:
    """The actor name of ``pool``'s balancer."""
    return pool + BALANCER_SUFFIX


def worker_name(pool: str, index: int) -> str:
    """The actor name of worker ``index`` of ``pool``."""
    return f"{pool}/w{index}"


def role_of(actor_name: str) -> tuple[Optional[str], str]:
    """``(pool, "balancer" | "worker")`` for a pool's actor; ``(None, "limits")`` for a limits holder
    (whose ``about()`` says which pool, if any, it serves)."""
    match = _POOL_ACTOR.match(actor_name)
    if match is None:
        return None, "limits"
    return match["pool"], "balancer" if match["role"] == "balancer" else "worker"


def pool_of(actor_name: str) -> Optional[str]:
    """The pool a balancer's actor name belongs to; None for any other actor."""
    return actor_name[: -len(BALANCER_SUFFIX)] if actor_name.endswith(BALANCER_SUFFIX) else None


def is_pool_actor(actor_name: str) -> bool:
    """Whether ``actor_name`` is a pool's balancer or worker (not, say, a limits holder)."""
    return _POOL_ACTOR.search(actor_name) is not None
