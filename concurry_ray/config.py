"""Default values of worker options: set once for a program, or temporarily for a block of code.

Every option of ``.options()`` takes its value from, most specific first:

1. the argument given to ``.options()``;
2. a :func:`temp_config` override for the worker's mode, then for every mode,
   innermost block first (visible only in the thread or asyncio task that
   opened the block);
3. ``global_config.<mode>.<option>`` (``global_config.ray.num_retries = 5``);
4. ``global_config.defaults.<option>`` (``global_config.defaults.mode = "process"``);
5. the shipped default (see :class:`~concurry_ray.options.WorkerOptions`).

Values are validated when they are set, with the same rules as ``.options()``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

from .defaults import EVERY_MODE, STORE
from .errors import ConfigError, closest
from .modes import MODES, canonical_mode
from .options import WorkerOptions, build_options, configured_default


class ConfigScope:
    """The defaults of one mode (``global_config.ray``) or of every mode (``global_config.defaults``).

    Read an option as an attribute to get its effective default for this scope;
    assign it to change the default (validated at once, ConfigError if bad).
    """

    def __init__(self, config: "GlobalConfig", scope: str) -> None:
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_scope", scope)

    def __getattr__(self, option: str) -> Any:
        if option.startswith("_"):
            raise AttributeError(option)
        return self._config.default(option, None if self._scope == EVERY_MODE else self._scope)

    def __setattr__(self, option: str, value: Any) -> None:
        self._config.set(self._scope, **{option: value})

    def as_dict(self) -> dict:
        """Every option's effective default in this scope."""
        return {option: getattr(self, option) for option in WorkerOptions.model_fields}

    def __repr__(self) -> str:
        return f"<concurry_ray defaults for {'every mode' if self._scope == EVERY_MODE else self._scope!r}>"


class GlobalConfig:
    """The program-wide defaults of worker options: ``defaults`` for every mode, one scope per mode.

    ``global_config.defaults.num_retries = 3`` applies to every new worker;
    ``global_config.ray.actor_options = {"num_cpus": 0.5}`` only to Ray workers.
    Workers already started keep the options they were built with.
    """

    def __init__(self) -> None:
        self.defaults = ConfigScope(self, EVERY_MODE)

    def __getattr__(self, mode: str) -> ConfigScope:
        """``global_config.<mode>``: the scope of any registered mode (aliases included)."""
        if mode.startswith("_"):
            raise AttributeError(mode)
        try:
            return ConfigScope(self, canonical_mode(mode))
        except ConfigError:
            raise AttributeError(
                f"global_config has no scope {mode!r}{closest(mode, [*MODES, 'defaults'])}; "
                f"use 'defaults' or a mode: {', '.join(MODES)}"
            ) from None

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *MODES]

    def set(self, scope: str, **values: Any) -> None:
        """Set defaults for ``scope`` (a mode name, or ``"*"`` for every mode), validating them first."""
        STORE.store(scope, validated(scope, values, f"global_config.{'defaults' if scope == EVERY_MODE else scope}"))

    def reset(self) -> None:
        """Forget every default set on ``global_config`` (temp_config blocks are unaffected)."""
        STORE.reset()

    def default(self, option: str, mode: Optional[str] = None) -> Any:
        """The effective default of ``option`` for ``mode`` (None: the default for every mode)."""
        if option not in WorkerOptions.model_fields:
            raise AttributeError(f"no option {option!r}{closest(option, WorkerOptions.model_fields)}")
        return configured_default(option, mode)


def validated(scope: str, values: dict, where: str) -> dict:
    """``values`` checked as ``.options()`` would check them in ``scope``, in their stored (canonical) form."""
    if scope != EVERY_MODE and "mode" in values:
        raise ConfigError(f"{where}: 'mode' is chosen for every mode (global_config.defaults.mode), not per mode")
    given = dict(values) if scope == EVERY_MODE else {**values, "mode": scope}
    try:
        built = build_options(**given)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return {option: getattr(built, option) for option in values}


def _parse(settings: dict) -> dict[str, dict[str, Any]]:
    """``temp_config`` keywords (``num_retries``, ``global_num_retries``, ``ray_num_retries``) by scope."""
    scopes: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        scope, option = EVERY_MODE, key
        prefix, _, rest = key.partition("_")
        if prefix == "global" and rest:
            option = rest
        elif prefix in MODES and rest:
            scope, option = prefix, rest
        scopes.setdefault(scope, {})[option] = value
    return scopes


@contextlib.contextmanager
def temp_config(**settings: Any) -> Iterator[GlobalConfig]:
    """Override option defaults inside a ``with`` block, for the current thread or asyncio task only.

    Keywords name an option for every mode (``num_retries=3``, also spelled
    ``global_num_retries=3``) or for one mode (``ray_num_retries=5``,
    ``thread_max_workers=4``). Values are validated on entry; the previous
    defaults come back on exit, also after an exception. Blocks nest, and other
    threads never see them. Also usable as a decorator.
    """
    layers = {scope: validated(scope, values, "temp_config") for scope, values in _parse(settings).items()}
    with STORE.temporarily(layers):
        yield global_config


global_config = GlobalConfig()
