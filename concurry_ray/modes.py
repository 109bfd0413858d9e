"""The one table of execution modes: for each, its name, its backend and its limits holder.

A mode is a row here and a module; nothing else in the library lists modes.
Backends and holders are imported on first use, so a program that never uses
Ray mode never imports Ray. Names are read by :func:`canonical_mode`, which
accepts an :class:`~concurry_ray.ExecutionMode` or any of its spellings.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple, Optional

from .enums import ExecutionMode, parse
from .errors import ConfigError


LOCAL_HOLDER = "concurry_ray.limits.holders:open_local"
LOCAL_MEMBERSHIP = "concurry_ray.pools.membership:LocalMembership"


class Mode(NamedTuple):
    """One execution mode: where its parts live (``module:attribute``) and the ExecutionMode it answers to.

    ``backend`` runs workers; ``limits_holder`` opens a shared LimitSet's holder
    that its workers reach; ``membership`` starts and replaces a pool's workers.
    """

    backend: str
    limits_holder: str = LOCAL_HOLDER
    member: Optional[ExecutionMode] = None
    membership: str = LOCAL_MEMBERSHIP


MODES: dict[str, Mode] = {
    "sync": Mode("local_backends.sync:SyncBackend", LOCAL_HOLDER, ExecutionMode.Sync),
    "asyncio": Mode("local_backends.asyncio:AsyncioBackend", LOCAL_HOLDER, ExecutionMode.Asyncio),
    "thread": Mode("local_backends.thread:ThreadBackend", LOCAL_HOLDER, ExecutionMode.Threads),
    "process": Mode("local_backends.process:ProcessBackend", "concurry_ray.limits.served:open_served", ExecutionMode.Processes),
    "ray": Mode(
        "concurry_ray.ray.backend:RayBackend",
        "concurry_ray.ray.limits_holder:open_ray",
        ExecutionMode.Ray,
        "concurry_ray.ray.membership:RayMembership",
    ),
}


def canonical_mode(mode: Any) -> str:
    """The table's name of a mode: ``"thread"`` for ``"Threads"``, ``"thread"`` or ``ExecutionMode.Threads``.

    ConfigError naming the value and the allowed modes if there is no such mode.
    """
    if isinstance(mode, str) and not isinstance(mode, ExecutionMode) and mode in MODES:
        return mode
    member = parse(ExecutionMode, mode, "mode")
    for name, entry in MODES.items():
        if entry.member is member:
            return name
    raise ConfigError(f"mode={mode!r} cannot run a worker; choose one of: {', '.join(MODES)}")


def backend_class(mode: Any) -> type:
    """The backend class of ``mode``, its module imported on first use."""
    return _load(MODES[canonical_mode(mode)].backend)


def limits_holder(mode: Any) -> Callable[..., Any]:
    """The function that opens a shared limits holder reachable from workers of ``mode``."""
    return _load(MODES[canonical_mode(mode)].limits_holder)


def membership_class(mode: Any) -> type:
    """The class that starts, replaces and retires the workers of a pool in ``mode``."""
    return _load(MODES[canonical_mode(mode)].membership)


def _load(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)
