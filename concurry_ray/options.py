"""Validated configuration of a worker or pool: everything ``.options()`` accepts.

``WorkerOptions`` is a pydantic model; a bad value is rejected when it is built,
with a :class:`ConfigError` that names the field, the value and what is allowed.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .enums import LoadBalancingAlgorithm, parse
from .errors import ConfigError, closest
from .modes import backend_class, canonical_mode
from .retry import RETRY_OPTIONS
from .retry import check_option as check_retry_option

PerMethod = Union[Any, dict]


class WorkerOptions(BaseModel):
    """Every option of a worker or pool, validated on construction.

    ``mode`` is stored canonical (``"thread"``, never ``"threads"``);
    ``load_balancing`` as a :class:`LoadBalancingAlgorithm` member. ``max_workers=None`` means the mode's default.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    mode: str = "thread"
    blocking: bool = False
    max_workers: Optional[int] = None
    load_balancing: Optional[LoadBalancingAlgorithm] = None
    on_demand: bool = False
    max_queued_tasks: Optional[int] = None
    limits: Any = None
    num_retries: PerMethod = 0
    retry_on: PerMethod = Field(default_factory=lambda: [Exception])
    retry_algorithm: PerMethod = "exponential"
    retry_wait: PerMethod = 1.0
    retry_jitter: PerMethod = 0.3
    retry_max_wait: PerMethod = None
    retry_until: PerMethod = None
    unwrap_futures: bool = True
    actor_options: dict = Field(default_factory=dict)
    mp_context: str = "forkserver"
    name: Optional[str] = None
    health_check: Optional[str] = None
    health_check_interval: float = 10.0
    call_timeout: Optional[float] = None

    @model_validator(mode="before")
    @classmethod
    def _configured_defaults(cls, data: Any) -> Any:
        from .config import global_config

        return global_config.fill(data) if isinstance(data, dict) else data

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> str:
        return canonical_mode(value)

    @field_validator("load_balancing", mode="before")
    @classmethod
    def _balancing(cls, value: Any) -> Optional[str]:
        return None if value is None else parse(LoadBalancingAlgorithm, value, "load_balancing")

    @field_validator("limits")
    @classmethod
    def _limits(cls, value: Any) -> Any:
        from .limits.limitset import check_limits_option

        return check_limits_option(value)

    @field_validator("max_workers", "max_queued_tasks")
    @classmethod
    def _non_negative(cls, value: Optional[int], info) -> Optional[int]:
        if value is not None and value < 0:
            raise ValueError(f"{info.field_name}={value} must be >= 0")
        return value

    @field_validator(*RETRY_OPTIONS)
    @classmethod
    def _retry_option(cls, value: Any, info) -> Any:
        return check_retry_option(info.field_name, value)

    @field_validator("health_check_interval")
    @classmethod
    def _positive_interval(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"health_check_interval={value} must be > 0 seconds")
        return value

    @field_validator("call_timeout")
    @classmethod
    def _positive_timeout(cls, value: Optional[float]) -> Optional[float]:
        if value is not None and value <= 0:
            raise ValueError(f"call_timeout={value} must be > 0 seconds")
        return value

    @field_validator("mp_context")
    @classmethod
    def _mp_context(cls, value: str) -> str:
        allowed = ("fork", "forkserver", "spawn")
        if value not in allowed:
            raise ValueError(f"mp_context={value!r} is not one of {allowed}")
        return value

    @model_validator(mode="after")
    def _pool_shape(self) -> "WorkerOptions":
        backend = backend_class(self.mode)
        if self.max_workers is not None and self.max_workers != 1 and not backend.supports_pools:
            raise ValueError(
                f"max_workers={self.max_workers} is not allowed in mode {self.mode!r}: "
                f"it runs exactly one worker (use max_workers=1, or mode 'thread', 'process' or 'ray' for a pool)"
            )
        if self.max_workers == 0 and not self.on_demand:
            raise ValueError("max_workers=0 is only allowed with on_demand=True (it means: no cap on live workers)")
        if self.on_demand and not backend.supports_pools:
            raise ValueError(f"on_demand=True is not allowed in mode {self.mode!r}: it runs exactly one worker")
        return self

    @property
    def pool_size(self) -> int:
        """How many persistent workers to start (on-demand pools start none)."""
        if self.on_demand:
            return 0
        return self.max_workers or 1

    @property
    def worker_cap(self) -> int:
        """Most live workers: for on-demand pools the mode's default when unset, 0 = no cap."""
        if not self.on_demand:
            return self.pool_size
        if self.max_workers is None:
            return backend_class(self.mode).on_demand_default_max_workers
        return self.max_workers

    @property
    def balancing(self) -> LoadBalancingAlgorithm:
        """The balancing algorithm, taking the on-demand default (Random) into account."""
        if self.load_balancing is not None:
            return self.load_balancing
        return LoadBalancingAlgorithm.Random if self.on_demand else LoadBalancingAlgorithm.RoundRobin


def build_options(**opts: Any) -> WorkerOptions:
    """Build :class:`WorkerOptions`, turning pydantic's errors into one ConfigError."""
    unknown = [k for k in opts if k not in WorkerOptions.model_fields]
    if unknown:
        hints = "; ".join(f"{k!r}{closest(k, WorkerOptions.model_fields)}" for k in unknown)
        raise ConfigError(f"unknown option {hints}; allowed: {', '.join(WorkerOptions.model_fields)}")
    try:
        return WorkerOptions(**opts)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "options"
        message = err["msg"].removeprefix("Value error, ")
        if field in message:
            parts.append(message)
        else:
            parts.append(f"{field}={err.get('input')!r}: {message}")
    return "invalid worker options: " + "; ".join(parts)
