"""Where configured option defaults are stored: program-wide layers and ``temp_config`` blocks.

Plain storage, no validation: :mod:`concurry_ray.config` validates values
before it stores them here, and :mod:`concurry_ray.options` reads them when it
builds a worker's options. Scopes are ``"*"`` (every mode) or a canonical mode name.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from typing import Any, Iterator, Optional

from .errors import ConfigError
from .modes import canonical_mode

EVERY_MODE = "*"
_temporary: contextvars.ContextVar[dict] = contextvars.ContextVar("concurry_ray_temp_config", default={})


class DefaultsStore:
    """Configured defaults per scope, and the ``temp_config`` layers of the current thread or task."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: dict[str, dict[str, Any]] = {}

    def store(self, scope: str, values: dict) -> None:
        """Remember already validated ``values`` for ``scope``."""
        with self._lock:
            settings = {name: dict(options) for name, options in self._settings.items()}
            settings.setdefault(scope, {}).update(values)
            self._settings = settings

    def reset(self) -> None:
        """Forget every program-wide default (temporary layers are unaffected)."""
        with self._lock:
            self._settings = {}

    @contextlib.contextmanager
    def temporarily(self, layers: dict[str, dict[str, Any]]) -> Iterator[None]:
        """Add validated ``layers`` (by scope) for the current thread or asyncio task, inside the block."""
        current = _temporary.get()
        merged = {scope: {**current.get(scope, {}), **layers.get(scope, {})} for scope in {*current, *layers}}
        token = _temporary.set(merged)
        try:
            yield
        finally:
            _temporary.reset(token)

    def overrides(self, mode: Optional[str]) -> dict:
        """Every configured default that applies to ``mode`` (None: to every mode), most specific last merged."""
        temporary = _temporary.get()
        merged: dict = {}
        for layer in (self._settings, temporary):
            merged.update(layer.get(EVERY_MODE, {}))
            if mode is not None:
                merged.update(layer.get(mode, {}))
        return merged

    def fill(self, options: dict, default_mode: Any) -> dict:
        """``options`` (as given to ``.options()``) completed with the configured defaults."""
        if options.get("mode") is None:
            options = {**options, "mode": self.overrides(None).get("mode", default_mode)}
        configured = self.overrides(_mode_or_none(options["mode"]))
        missing = {k: _copy(v) for k, v in configured.items() if k not in options and k != "mode"}
        return {**missing, **options} if missing else options


def _mode_or_none(mode: Any) -> Optional[str]:
    try:
        return canonical_mode(mode)
    except ConfigError:
        return None


def _copy(value: Any) -> Any:
    return type(value)(value) if isinstance(value, (list, dict, set)) else value


STORE = DefaultsStore()
"""The one store of configured defaults, behind ``global_config`` and ``temp_config``."""
