"""Every option is checked at ``.options()``: a bad value is a ConfigError naming the field, the value
and what is allowed, never a raw TypeError, never a worker that hangs or fails later.

Nothing here starts a worker except the sync-mode retry test, and nothing imports Ray
(a subprocess checks that a thread-mode ``.options()`` leaves Ray unimported).
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
import types

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concurry_ray import ConfigError, Worker
from concurry_ray.enums import ExecutionMode, LoadBalancingAlgorithm, RetryAlgorithm
from concurry_ray.modes import MODES
from concurry_ray.options import RAY_SHORTHANDS, RetryConfig, WorkerOptions, build_options
from concurry_ray.ray import option_names
from concurry_ray.retry import LONGEST_WAIT, Backoff


class Plain(Worker):
    def ping(self) -> str:
        return "pong"

    def fail(self) -> None:
        raise ValueError("always")


def refused(field: str, **options) -> str:
    """The message of the ConfigError that ``.options(**options)`` raises; it must name ``field``."""
    with pytest.raises(ConfigError) as info:
        Plain.options(**options)
    assert field in str(info.value), str(info.value)
    return str(info.value)


# ----- 1. max_queued_tasks < 1 -------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1])
def test_max_queued_tasks_below_one_is_refused(value):
    message = refused("max_queued_tasks", mode="thread", max_queued_tasks=value)
    assert f"max_queued_tasks={value}" in message and ">= 1" in message


@pytest.mark.parametrize("value", [None, 1, 50])
def test_max_queued_tasks_of_one_or_more_or_none_is_accepted(value):
    assert build_options(mode="thread", max_queued_tasks=value).max_queued_tasks == value


# ----- 2. NaN and infinities ---------------------------------------------------------

SECONDS = ["call_timeout", "health_check_interval", "retry_wait", "retry_jitter", "retry_max_wait"]
NON_FINITE = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
@pytest.mark.parametrize("field", SECONDS)
def test_non_finite_seconds_are_refused(field, value):
    message = refused(field, mode="thread", **{field: value})
    assert f"{field}={value!r}" in message and "finite" in message


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
@pytest.mark.parametrize("field", ["retry_wait", "retry_jitter", "retry_max_wait"])
def test_non_finite_seconds_are_refused_per_method(field, value):
    message = refused(field, mode="thread", **{field: {"*": 0.1, "ping": value}})
    assert f"{field}['ping']={value!r}" in message


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
def test_non_finite_retry_config_is_refused(value):
    with pytest.raises(ConfigError, match="retry_wait="):
        RetryConfig(retry_wait=value)


@pytest.mark.parametrize("value", NON_FINITE, ids=repr)
@pytest.mark.parametrize("field", ["num_cpus", "num_gpus"])
def test_non_finite_cpu_and_gpu_amounts_are_refused(field, value):
    refused(field, mode="thread", actor_options={field: value})


# ----- 3. strict types -----------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_workers", True),
        ("max_workers", False),
        ("max_workers", 2.0),
        ("max_workers", "2"),
        ("max_queued_tasks", True),
        ("max_queued_tasks", 3.0),
        ("num_retries", True),
        ("health_check_interval", True),
        ("health_check_interval", "10"),
        ("call_timeout", True),
        ("call_timeout", "5"),
        ("retry_wait", False),
    ],
)
def test_bools_and_strings_where_numbers_are_expected_are_refused(field, value):
    message = refused(field, mode="thread", on_demand=True, **{field: value})
    assert f"{field}={value!r}" in message


@pytest.mark.parametrize("field", ["blocking", "on_demand", "unwrap_futures"])
@pytest.mark.parametrize("value", ["yes", "no", "true", 1, 0, 1.0, None])
def test_flags_take_only_bools(field, value):
    message = refused(field, mode="thread", **{field: value})
    assert f"{field}={value!r}" in message and "True or False" in message


def test_numbers_and_flags_of_the_right_type_are_accepted():
    built = build_options(
        mode="thread", max_workers=2, max_queued_tasks=3, health_check_interval=5, call_timeout=1,
        blocking=True, on_demand=False, unwrap_futures=False,
    )
    assert (built.max_workers, built.max_queued_tasks, built.blocking, built.unwrap_futures) == (2, 3, True, False)
    assert built.health_check_interval == 5.0 and isinstance(built.health_check_interval, float)
    assert built.call_timeout == 1.0


# ----- 4. actor_options ---------------------------------------------------------------


def test_a_misspelt_actor_option_is_refused_with_a_hint():
    message = refused("num_cpu", mode="thread", actor_options={"num_cpu": 1})
    assert "did you mean 'num_cpus'?" in message and "actor_options" in message


def test_every_documented_actor_option_is_accepted_in_thread_mode():
    for key in ("num_cpus", "num_gpus", "resources", "memory", "max_concurrency", "max_restarts", "lifetime",
                "scheduling_strategy", "runtime_env", "namespace", "label_selector", "placement_group"):
        assert key in build_options(mode="thread", actor_options={key: None if key != "num_cpus" else 1}).actor_options


@pytest.mark.parametrize("value", [-1, -0.5, "2", True, [1]], ids=repr)
@pytest.mark.parametrize("field", ["num_cpus", "num_gpus"])
def test_bad_cpu_and_gpu_amounts_are_refused(field, value):
    for options in ({"actor_options": {field: value}}, {field: value}):
        message = refused(field, mode="thread", **options)
        assert f"{value!r}" in message


def test_bad_custom_resource_amounts_are_refused():
    refused("resources", mode="thread", actor_options={"resources": {"TPU": -1}})
    refused("resources", mode="thread", resources=[("TPU", 1)])
    assert build_options(mode="thread", resources={"TPU": 2}).actor_options == {"resources": {"TPU": 2}}


def test_actor_option_names_come_from_the_backend_table_when_there_is_one(monkeypatch):
    table = types.ModuleType("ray._common.ray_option_utils")
    table.actor_options = {"num_cpus": None, "brand_new_option": None}
    monkeypatch.setitem(sys.modules, "ray._common.ray_option_utils", table)
    assert option_names.actor_option_names(load_ray=True) == frozenset({"num_cpus", "brand_new_option"})
    assert option_names.actor_option_names(load_ray=False) == option_names.DOCUMENTED_ACTOR_OPTIONS


def test_actor_option_names_fall_back_to_the_documented_list(monkeypatch):
    for path in option_names.RAY_OPTION_TABLES:
        monkeypatch.setitem(sys.modules, path, types.ModuleType(path))  # no actor_options table
    assert option_names.actor_option_names(load_ray=True) == option_names.DOCUMENTED_ACTOR_OPTIONS


def test_thread_mode_options_leave_the_backend_library_unimported():
    code = (
        "import sys\n"
        "from concurry_ray import Worker\n"
        "class W(Worker):\n    pass\n"
        "W.options(mode='thread', actor_options={'num_cpus': 1}, num_gpus=0)\n"
        "try:\n    W.options(mode='thread', actor_options={'num_cpu': 1})\nexcept ValueError:\n    pass\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


# ----- 5. backoff never overflows ---------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(RetryAlgorithm))
@pytest.mark.parametrize("failures", [1100, 5000, 10**9])
def test_backoff_never_overflows(algorithm, failures):
    rng = random.Random(0)
    assert 0 <= Backoff(algorithm, wait=1.0, jitter=0.3).seconds(failures, rng) <= LONGEST_WAIT
    assert Backoff(algorithm, wait=0.0, jitter=0.3).seconds(failures, rng) == 0
    assert Backoff(algorithm, wait=10.0, jitter=0.0, max_wait=7.5).seconds(failures, rng) == 7.5


def test_a_thousand_retries_end_with_the_users_error():
    with Plain.options(mode="sync", num_retries=1100, retry_wait=0, retry_on=[ValueError]).init() as worker:
        with pytest.raises(ValueError, match="always") as info:
            worker.fail().result(timeout=30)
    assert any("gave up after 1101 attempts" in note for note in info.value.__notes__)


# ----- 6. wrong types are ConfigErrors, never TypeErrors ---------------------------------

class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


STRANGE = [Opaque(), 1j, b"x", [1], ["rr"], {"a": 1}, ("x",), set(), math.nan, "x", -1, True, None, int, print]


@pytest.mark.parametrize("value", STRANGE, ids=repr)
@pytest.mark.parametrize("field", [*WorkerOptions.model_fields, *RAY_SHORTHANDS])
def test_a_value_of_any_type_is_accepted_or_a_config_error(field, value):
    base = {"mode": "thread", "on_demand": True} if field not in ("mode", "on_demand") else {}
    try:
        Plain.options(**base, **{field: value})
    except ConfigError as exc:
        assert field in str(exc)


def test_a_list_for_load_balancing_is_a_config_error():
    refused("load_balancing", mode="thread", load_balancing=["rr"])


def test_shorthands_with_a_bad_actor_options_are_a_config_error():
    refused("actor_options", mode="thread", num_cpus=1, actor_options=1)
    refused("actor_options", mode="thread", num_cpus=1, actor_options=[("num_gpus", 1)])


# ----- 7. generated bad option dicts -------------------------------------------------------

GOOD = {
    "mode": "thread", "max_workers": 2, "max_queued_tasks": 4, "num_retries": 1, "retry_wait": 0.1,
    "retry_jitter": 0.5, "retry_max_wait": 3, "call_timeout": 5.0, "health_check_interval": 1,
    "blocking": False, "unwrap_futures": True, "load_balancing": "rr", "retry_algorithm": "linear",
    "actor_options": {"num_cpus": 1},
}
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
not_a_number = st.one_of(st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=2))
not_an_int = st.one_of(not_a_number, st.floats(allow_nan=True), non_finite)
negative = st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False) | st.integers(max_value=-1)
not_a_bool = st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.none(), st.lists(st.booleans(), max_size=1))
identifier = st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True)


def _unknown_name(enum: type) -> st.SearchStrategy:
    def unknown(value: str) -> bool:
        return enum.from_str(value, raise_error=False) is None and value not in MODES

    return st.one_of(st.text(max_size=12).filter(unknown), st.integers(), st.lists(st.text(max_size=3), max_size=2))


def _seconds(low_ok: float) -> st.SearchStrategy:
    return st.one_of(non_finite, not_a_number, st.floats(max_value=low_ok, exclude_max=True, allow_nan=False)
                     .filter(lambda v: v < low_ok))


def _per_method(field: str, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``bad`` as the value of a retry option, alone or inside a per-method dict."""
    return bad.flatmap(lambda v: st.sampled_from([v, {"*": v}, {"*": GOOD.get(field, 0), "ping": v}]))


BAD = {
    "max_workers": st.one_of(not_an_int, st.integers(max_value=-1)),
    "max_queued_tasks": st.one_of(not_an_int, st.integers(max_value=0)),
    "num_retries": _per_method("num_retries", st.one_of(not_an_int, st.integers(max_value=-1))),
    "retry_wait": _per_method("retry_wait", _seconds(0)),
    "retry_jitter": _per_method("retry_jitter", st.one_of(_seconds(0), st.floats(min_value=1.0001, max_value=1e9))),
    "retry_max_wait": _per_method("retry_max_wait", st.one_of(non_finite, negative, st.booleans(), st.text(max_size=3))),
    "call_timeout": st.one_of(non_finite, st.floats(max_value=0, allow_nan=False), st.booleans(), st.text(max_size=3)),
    "health_check_interval": st.one_of(_seconds(0), st.just(0), st.just(0.0)),
    "blocking": not_a_bool,
    "on_demand": not_a_bool,
    "unwrap_futures": not_a_bool,
    "mode": _unknown_name(ExecutionMode),
    "load_balancing": _unknown_name(LoadBalancingAlgorithm),
    "retry_algorithm": _per_method("retry_algorithm", _unknown_name(RetryAlgorithm)),
    "num_cpus": st.one_of(non_finite, negative, st.booleans(), st.text(max_size=3)),
    "num_gpus": st.one_of(non_finite, negative, st.booleans(), st.text(max_size=3)),
}


@st.composite
def bad_options(draw) -> tuple[str, dict]:
    """(the name the error must contain, options with exactly one bad entry and some good ones)."""
    good = draw(st.dictionaries(st.sampled_from(sorted(GOOD)), st.just(None), max_size=6))
    options = {key: GOOD[key] for key in good}
    kind = draw(st.sampled_from([*BAD, "unknown option", "actor_options key", "actor_options amount"]))
    if kind == "unknown option":
        name = draw(identifier.filter(lambda k: k not in WorkerOptions.model_fields and k not in RAY_SHORTHANDS))
        value = draw(st.integers())
    elif kind == "actor_options key":
        key = draw(identifier.filter(lambda k: k not in option_names.DOCUMENTED_ACTOR_OPTIONS))
        name, value = key, {key: draw(st.integers())}
        kind = "actor_options"
    elif kind == "actor_options amount":
        name = draw(st.sampled_from(["num_cpus", "num_gpus"]))
        kind, value = "actor_options", {name: draw(BAD[name])}
    else:
        name, value = kind, draw(BAD[kind])
    if kind in RAY_SHORTHANDS:
        options.pop("actor_options", None)  # else the shorthand would clash with GOOD's num_cpus
    if kind in ("max_workers", "on_demand"):
        options["mode"] = "thread"
    options[kind if kind != "unknown option" else name] = value
    return name, options


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_options())
def test_every_generated_bad_option_is_refused_naming_the_field(case):
    name, options = case
    with pytest.raises(ConfigError) as info:
        Plain.options(**options)
    assert name in str(info.value), (options, str(info.value))
