"""Validated configuration of a worker or pool: everything ``.options()`` accepts.

``WorkerOptions`` is a pydantic model; a bad value is rejected when it is built,
with a :class:`ConfigError` that names the field, the value and what is allowed.
:class:`RetryConfig` holds just the retry options, checked by the same rules.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .defaults import STORE
from .enums import LoadBalancingAlgorithm, RetryAlgorithm, parse
from .errors import ConfigError, closest
from .modes import backend_class, canonical_mode
from .ray.option_names import actor_option_names
from .retry import RETRY_OPTIONS, check_number
from .retry import check_option as check_retry_option

PerMethod = Union[Any, dict]
RAY_SHORTHANDS = ("num_cpus", "num_gpus", "resources", "memory")  # concurry's top-level spellings of actor_options
FLAGS = ("blocking", "on_demand", "unwrap_futures")
AMOUNTS = ("num_cpus", "num_gpus", "memory", "object_store_memory")  # actor_options that reserve a quantity


def _check_retry_field(value: Any, info: ValidationInfo) -> Any:
    """The pydantic validator of every retry option, in WorkerOptions and RetryConfig alike."""
    return check_retry_option(info.field_name, value)


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
    retry_algorithm: PerMethod = RetryAlgorithm.Exponential
    retry_wait: PerMethod = 1.0
    retry_jitter: PerMethod = 0.3
    retry_max_wait: PerMethod = None
    retry_until: PerMethod = None
    unwrap_futures: bool = True
    actor_options: dict = Field(default_factory=dict)
    mp_context: str = "forkserver"
    name: Optional[str] = None
    lifetime: Optional[str] = None
    min_workers: Optional[int] = None
    initial_workers: Optional[int] = None
    idle_timeout: float = 60.0
    health_check: Optional[str] = None
    health_check_interval: float = 10.0
    call_timeout: Optional[float] = None

    @model_validator(mode="before")
    @classmethod
    def _configured_defaults(cls, data: Any) -> Any:
        return STORE.fill(data, cls.model_fields["mode"].default) if isinstance(data, dict) else data

    @model_validator(mode="before")
    @classmethod
    def _ray_shorthands(cls, data: Any) -> Any:
        """``num_cpus=2`` (concurry's spelling) is ``actor_options={"num_cpus": 2}``."""
        if not isinstance(data, dict) or data.keys().isdisjoint(RAY_SHORTHANDS):
            return data
        given = {key: data[key] for key in RAY_SHORTHANDS if key in data}
        actor_options = data.get("actor_options") or {}
        if not isinstance(actor_options, dict):
            raise ValueError(
                f"actor_options={actor_options!r} must be a dict of Ray actor options, not {type(actor_options).__name__}"
            )
        clash = sorted(set(given) & set(actor_options))
        if clash:
            raise ValueError(f"{', '.join(clash)} given both as an option and in actor_options={actor_options!r}; give it once")
        rest = {key: value for key, value in data.items() if key not in given}
        return {**rest, "actor_options": {**actor_options, **given}}

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
        from .limits.pool_option import check_limits_option

        return check_limits_option(value)

    @field_validator(*FLAGS, mode="before")
    @classmethod
    def _flag(cls, value: Any, info: ValidationInfo) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{info.field_name}={value!r} must be True or False, not {type(value).__name__}")
        return value

    @field_validator("max_workers", "max_queued_tasks", "min_workers", "initial_workers", mode="before")
    @classmethod
    def _pool_sizes(cls, value: Any, info: ValidationInfo) -> Optional[int]:
        field = info.field_name
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{field}={value!r} must be an integer or None, not {type(value).__name__}")
        if field == "max_queued_tasks" and value < 1:
            raise ValueError(
                f"max_queued_tasks={value!r} must be >= 1, or None for an unbounded queue "
                "(with no room in the queue every call would wait forever)"
            )
        if value < 0:
            raise ValueError(f"{field}={value!r} must be >= 0")
        return int(value)

    _retry_option = field_validator(*RETRY_OPTIONS)(_check_retry_field)

    @field_validator("health_check_interval", "idle_timeout", mode="before")
    @classmethod
    def _positive_interval(cls, value: Any, info: ValidationInfo) -> float:
        return check_number(info.field_name, value, 0, above=True)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Optional[str]:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"name={value!r} must be a non-empty string, or None")
        return value

    @field_validator("lifetime", mode="before")
    @classmethod
    def _lifetime(cls, value: Any) -> Optional[str]:
        allowed = (None, "detached", "non_detached")
        if value not in allowed:
            raise ValueError(f"lifetime={value!r} is not one of {allowed} (Ray's values)")
        return None if value == "non_detached" else value

    @field_validator("call_timeout", mode="before")
    @classmethod
    def _positive_timeout(cls, value: Any) -> Optional[float]:
        return None if value is None else check_number("call_timeout", value, 0, above=True)

    @field_validator("actor_options", mode="before")
    @classmethod
    def _actor_options(cls, value: Any, info: ValidationInfo) -> dict:
        return check_actor_options(value, info.data.get("mode"))

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
        backend.check_options(self)
        if self.max_workers is not None and self.max_workers != 1 and not backend.supports_pools:
            raise ValueError(
                f"max_workers={self.max_workers} is not allowed in mode {self.mode!r}: "
                f"it runs exactly one worker (use max_workers=1, or mode 'thread', 'process' or 'ray' for a pool)"
            )
        if self.max_workers == 0 and not self.on_demand:
            raise ValueError("max_workers=0 is only allowed with on_demand=True (it means: no cap on live workers)")
        if self.on_demand and not backend.supports_pools:
            raise ValueError(f"on_demand=True is not allowed in mode {self.mode!r}: it runs exactly one worker")
        if self.lifetime is not None:
            self._check_detached(backend)
        if self.min_workers is not None or self.initial_workers is not None:
            self._check_elastic(backend)
        return self

    def _check_detached(self, backend: type) -> None:
        if not backend.supports_detached:
            raise ValueError(
                f"lifetime={self.lifetime!r} is not allowed in mode {self.mode!r}: only mode 'ray' pools can outlive "
                "their driver"
            )
        if self.name is None:
            raise ValueError(f"lifetime={self.lifetime!r} needs a name= (the pool is found again by its name)")

    def _check_elastic(self, backend: type) -> None:
        if self.on_demand or not backend.supports_pools:
            raise ValueError(
                f"min_workers/initial_workers apply to persistent pools in mode 'thread', 'process' or 'ray' "
                f"(got mode={self.mode!r}, on_demand={self.on_demand})"
            )
        size, low = self.pool_size, self.min_workers if self.min_workers is not None else self.pool_size
        if low > size:
            raise ValueError(f"min_workers={low} must be <= max_workers={size}")
        start = self.initial_workers
        if start is not None and not low <= start <= size:
            raise ValueError(f"initial_workers={start} must be between min_workers={low} and max_workers={size}")

    @property
    def pool_size(self) -> int:
        """How many persistent workers to start (on-demand pools start none)."""
        if self.on_demand:
            return 0
        return self.max_workers or 1

    @property
    def elastic(self) -> bool:
        """Whether the pool grows and shrinks between ``min_workers`` and ``max_workers``."""
        return self.min_workers is not None and self.min_workers < self.pool_size

    @property
    def initial_size(self) -> int:
        """How many persistent workers the pool starts with: ``initial_workers``, else ``min_workers``
        for an elastic pool, else its size."""
        if self.initial_workers is not None:
            return self.initial_workers
        return self.min_workers if self.elastic else self.pool_size

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


def check_actor_options(value: Any, mode: Optional[str]) -> dict:
    """``value`` if it is a dict of options Ray's actor ``.options()`` accepts, with sensible amounts.

    In mode "ray" the keys are checked against Ray's own table (importing Ray, as
    that mode's backend does anyway); in other modes, where actor_options only travel
    in the options, against the names Ray documents, so that Ray stays unimported.
    """
    if not isinstance(value, dict):
        raise ValueError(f"actor_options={value!r} must be a dict of Ray actor options, not {type(value).__name__}")
    allowed = actor_option_names(load_ray=mode == "ray")
    unknown = [key for key in value if key not in allowed]
    if unknown:
        hints = "; ".join(f"{key!r}{closest(key, allowed)}" for key in unknown)
        raise ValueError(
            f"actor_options={value!r}: Ray's actor .options() does not accept {hints}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    for key in AMOUNTS:
        if value.get(key) is not None:
            check_number(f"actor_options[{key!r}]", value[key], 0)
    resources = value.get("resources")
    if resources is not None:
        if not isinstance(resources, dict):
            raise ValueError(f"actor_options['resources']={resources!r} must be a dict of resource name -> amount")
        for name, amount in resources.items():
            check_number(f"actor_options['resources'][{name!r}]", amount, 0)
    return value


def configured_default(option: str, mode: Optional[str] = None) -> Any:
    """The effective default of ``option`` for ``mode`` (None: for every mode): configured, else shipped."""
    overrides = STORE.overrides(mode)
    if option in overrides:
        return overrides[option]
    return WorkerOptions.model_fields[option].get_default(call_default_factory=True)


def _configured(option: str) -> Any:
    """A field default read when a RetryConfig is built: ``option``'s default for every mode in global_config."""

    def default() -> Any:
        return configured_default(option)

    return Field(default_factory=default)


class RetryConfig(BaseModel):
    """The retry options of a worker as one immutable, validated value (concurry's ``RetryConfig``).

    It holds ``num_retries``, ``retry_on``, ``retry_algorithm``, ``retry_wait``,
    ``retry_jitter``, ``retry_max_wait`` and ``retry_until``, checked by exactly
    the rules of ``.options()`` (a bad value is a :class:`ConfigError`), and
    stored normalised: ``retry_algorithm`` as a :class:`RetryAlgorithm`,
    ``retry_on`` as a tuple. An option left out takes its default from
    ``global_config.defaults`` (or a ``temp_config`` block) at construction.
    Build one to share a retry policy between workers::

        policy = RetryConfig(num_retries=3, retry_on=[ConnectionError], retry_wait=0.5)
        api = Api.options(mode="thread", **policy.model_dump(exclude_unset=True)).init()

    ``exclude_unset=True`` passes only the options given here, so the worker's
    mode-specific defaults (``global_config.ray.num_retries``) still apply to the rest.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True, validate_default=True)

    num_retries: PerMethod = _configured("num_retries")
    retry_on: PerMethod = _configured("retry_on")
    retry_algorithm: PerMethod = _configured("retry_algorithm")
    retry_wait: PerMethod = _configured("retry_wait")
    retry_jitter: PerMethod = _configured("retry_jitter")
    retry_max_wait: PerMethod = _configured("retry_max_wait")
    retry_until: PerMethod = _configured("retry_until")

    _retry_option = field_validator(*RETRY_OPTIONS)(_check_retry_field)

    def __init__(self, **options: Any) -> None:
        _reject_unknown(options, type(self).model_fields)
        try:
            super().__init__(**options)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, "invalid RetryConfig")) from None


def build_options(**opts: Any) -> WorkerOptions:
    """Build :class:`WorkerOptions`, turning pydantic's errors into one ConfigError."""
    _reject_unknown(opts, [*WorkerOptions.model_fields, *RAY_SHORTHANDS])
    try:
        return WorkerOptions(**opts)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "invalid worker options")) from None


def _reject_unknown(opts: dict, allowed: Any) -> None:
    unknown = [k for k in opts if k not in allowed]
    if unknown:
        hints = "; ".join(f"{k!r}{closest(k, allowed)}" for k in unknown)
        raise ConfigError(f"unknown option {hints}; allowed: {', '.join(allowed)}")


def _describe(exc: ValidationError, what: str) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "options"
        message = err["msg"].removeprefix("Value error, ")
        if field in message:
            parts.append(message)
        else:
            parts.append(f"{field}={err.get('input')!r}: {message}")
    return f"{what}: " + "; ".join(parts)
