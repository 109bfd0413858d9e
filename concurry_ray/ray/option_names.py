"""The keys Ray's actor ``.options()`` accepts, so that ``actor_options`` typos are caught at ``.options()``.

Ray has no public list of them. Its own check (``validate_actor_options``) reads the
table ``ray_option_utils.actor_options``, which lives in ``ray._common`` in recent
releases and in ``ray._private`` in older ones; we read that table when one of them
has it, and otherwise fall back to the names Ray documents for ``ActorClass.options``.

Importing this module never imports Ray: only ``actor_option_names(load_ray=True)``
does, and ``.options()`` asks for that in mode ``"ray"`` only (whose backend imports
Ray anyway), so a program that never uses Ray never loads it.
"""

from __future__ import annotations

import importlib

RAY_OPTION_TABLES = ("ray._common.ray_option_utils", "ray._private.ray_option_utils")
"""Where Ray keeps its table of option names, newest location first (private: read behind a check)."""

DOCUMENTED_ACTOR_OPTIONS = frozenset(
    {
        "accelerator_type",
        "allow_out_of_order_execution",
        "concurrency_groups",
        "enable_task_events",
        "fallback_strategy",
        "get_if_exists",
        "label_selector",
        "lifetime",
        "max_concurrency",
        "max_pending_calls",
        "max_restarts",
        "max_task_retries",
        "memory",
        "name",
        "namespace",
        "num_cpus",
        "num_gpus",
        "object_store_memory",
        "placement_group",
        "placement_group_bundle_index",
        "placement_group_capture_child_tasks",
        "resources",
        "runtime_env",
        "scheduling_strategy",
        "_metadata",
    }
)
"""The actor options Ray documents (``ActorClass.options``, ``ray.remote``): the check outside mode "ray",
and in mode "ray" when Ray's own table cannot be found."""


def actor_option_names(load_ray: bool) -> frozenset[str]:
    """The keys ``actor_options`` may have: Ray's own table when ``load_ray`` (importing Ray), else the documented ones."""
    return _ray_actor_options() if load_ray else DOCUMENTED_ACTOR_OPTIONS


def _ray_actor_options() -> frozenset[str]:
    for path in RAY_OPTION_TABLES:
        try:
            table = importlib.import_module(path).actor_options
        except (ImportError, AttributeError):
            continue
        if isinstance(table, dict) and table:
            return frozenset(table)
    return DOCUMENTED_ACTOR_OPTIONS
