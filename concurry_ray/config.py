"""Global defaults for worker options."""

from __future__ import annotations

from typing import Any


class GlobalConfig:
    """Defaults used when an option is not given to ``.options()``."""

    def __init__(self) -> None:
        self._defaults: dict[str, Any] = {"mode": "thread"}

    def default(self, field: str) -> Any:
        """The default value of ``field``."""
        return self._defaults[field]


global_config = GlobalConfig()
