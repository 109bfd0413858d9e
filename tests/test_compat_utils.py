"""concurry's utilities: RetryConfig (checked like .options()), Timer and TimerError, ProgressBar over a dict."""

from __future__ import annotations

import io
import pickle
import re
import time
from datetime import datetime, timedelta

import pytest
from conftest import ALL_MODES, REPO

from concurry_ray import (
    ConfigError,
    ProgressBar,
    RetryAlgorithm,
    RetryConfig,
    RetryValidationError,
    Timer,
    TimerError,
    Worker,
    global_config,
    temp_config,
)
from concurry_ray.timer import readable_seconds

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d"

# ----- RetryConfig -------------------------------------------------------------------------


class Shaky(Worker):
    """Raises ConnectionError on the first ``failures`` calls per key; counts attempts."""

    def __init__(self):
        self.calls: dict = {}

    def fail_then_succeed(self, key: str, failures: int) -> int:
        attempt = self.calls[key] = self.calls.get(key, 0) + 1
        if attempt <= failures:
            raise ConnectionError(f"{key}: attempt {attempt} failed")
        return attempt

    def wrong_key(self, key: str) -> None:
        self.calls[key] = self.calls.get(key, 0) + 1
        raise KeyError(key)

    def attempts(self, key: str) -> int:
        return self.calls.get(key, 0)

    def echo(self, value: int) -> int:
        return value


def is_even(result, **context) -> bool:
    return result % 2 == 0


def test_retry_config_defaults_are_the_options_defaults_normalised():
    config = RetryConfig()
    assert config.num_retries == 0
    assert config.retry_on == (Exception,)
    assert config.retry_algorithm is RetryAlgorithm.Exponential
    assert (config.retry_wait, config.retry_jitter) == (1.0, 0.3)
    assert config.retry_max_wait is None and config.retry_until is None
    assert config.model_dump(exclude_unset=True) == {}


def test_retry_config_normalises_like_options():
    config = RetryConfig(retry_algorithm="constant", retry_on=ConnectionError, retry_until=is_even, retry_wait=2)
    assert config.retry_algorithm is RetryAlgorithm.Fixed
    assert config.retry_on == (ConnectionError,)
    assert config.retry_until == (is_even,)
    assert config.retry_wait == 2.0 and isinstance(config.retry_wait, float)
    per_method = RetryConfig(num_retries={"*": 0, "fetch": 3}, retry_algorithm={"*": "linear", "fetch": "FIXED"})
    assert per_method.num_retries == {"*": 0, "fetch": 3}
    assert per_method.retry_algorithm == {"*": RetryAlgorithm.Linear, "fetch": RetryAlgorithm.Fixed}


@pytest.mark.parametrize(
    "bad",
    [
        {"num_retries": -1},
        {"num_retries": True},
        {"num_retries": "3"},
        {"retry_algorithm": "exponentail"},
        {"retry_wait": -0.5},
        {"retry_wait": float("nan")},
        {"retry_max_wait": float("inf")},
        {"retry_jitter": 1.5},
        {"retry_on": [int]},
        {"retry_on": "ConnectionError"},
        {"retry_until": 3},
        {"num_retries": {"fetch": 3}},
        {"retry_jitter": {"*": 0.1, "fetch": 2}},
    ],
)
def test_retry_config_rejects_exactly_what_options_rejects(bad):
    with pytest.raises(ConfigError) as from_options:
        Shaky.options(**bad)
    with pytest.raises(ConfigError) as from_config:
        RetryConfig(**bad)
    assert str(from_config.value).startswith("invalid RetryConfig: ")
    assert str(from_config.value).split(": ", 1)[1] == str(from_options.value).split(": ", 1)[1]


def test_retry_config_unknown_option_and_frozen():
    with pytest.raises(ConfigError, match=r"unknown option 'num_retry' \(did you mean 'num_retries'\?\); allowed: "):
        RetryConfig(num_retry=3)
    config = RetryConfig(num_retries=2)
    with pytest.raises(ValueError, match="frozen"):
        config.num_retries = 5
    assert config.num_retries == 2


def test_retry_config_takes_configured_defaults_at_construction():
    with temp_config(num_retries=4, retry_algorithm="fibonacci"):
        inside = RetryConfig(retry_wait=0.5)
    assert (inside.num_retries, inside.retry_algorithm, inside.retry_wait) == (4, RetryAlgorithm.Fibonacci, 0.5)
    assert inside.model_dump(exclude_unset=True) == {"retry_wait": 0.5}
    global_config.defaults.retry_jitter = 0.0
    try:
        assert RetryConfig().retry_jitter == 0.0
    finally:
        global_config.reset()
    assert RetryConfig().retry_jitter == 0.3


def test_retry_config_pickles_and_compares_by_value():
    config = RetryConfig(num_retries=3, retry_on=[ConnectionError, TimeoutError], retry_until=is_even)
    assert pickle.loads(pickle.dumps(config)) == config
    assert config != RetryConfig(num_retries=2, retry_on=[ConnectionError, TimeoutError], retry_until=is_even)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_retry_config_drives_a_worker_in_every_mode(mode, mode_opts):
    config = RetryConfig(num_retries=2, retry_on=[ConnectionError], retry_algorithm="fixed", retry_wait=0.01)
    with Shaky.options(**mode_opts(mode), **config.model_dump(exclude_unset=True)).init() as w:
        assert w.fail_then_succeed("twice", 2).result(timeout=60) == 3
        with pytest.raises(ConnectionError, match="attempt 3 failed"):
            w.fail_then_succeed("always", 9).result(timeout=60)
        with pytest.raises(KeyError):
            w.wrong_key("not-retried").result(timeout=60)
        assert w.attempts("not-retried").result(timeout=60) == 1
    until_even = RetryConfig(num_retries=1, retry_until=is_even, retry_wait=0.01)
    with Shaky.options(**mode_opts(mode), **until_even.model_dump()).init() as w:
        assert w.fail_then_succeed("even", 0).result(timeout=60) == 2, "attempt 1 returned 1 (odd): retried"
        with pytest.raises(RetryValidationError, match="rejected every attempt") as info:
            w.echo(3).result(timeout=60)
        assert info.value.attempts == [3, 3]


# ----- Timer ---------------------------------------------------------------------------------


def test_timer_measures_a_block_in_every_unit():
    with Timer(silent=True) as timer:
        time.sleep(0.05)
    assert timer.has_started and timer.has_stopped
    assert 0.05 <= timer.time_taken_sec < 1.0, timer.time_taken_sec
    ns = timer.time_taken_ns
    assert isinstance(ns, int) and ns == timer.time_taken("ns")
    assert timer.time_taken_us == ns / 1e3 == timer.time_taken("microseconds")
    assert timer.time_taken_ms == ns / 1e6 == timer.time_taken("ms")
    assert timer.time_taken_sec == ns / 1e9 == timer.time_taken("s")
    assert timer.time_taken_td == timedelta(microseconds=ns / 1e3) == timer.time_taken("td")
    assert timer.time_taken_str == timer.time_taken_human == timer.time_taken(str) == timer.time_taken("string")
    assert re.fullmatch(r"\d+\.\d+ milliseconds", timer.time_taken_str), timer.time_taken_str


def test_timer_reads_time_so_far_while_running_and_freezes_at_stop():
    timer = Timer(silent=True)
    timer.start()
    time.sleep(0.02)
    first = timer.time_taken_sec
    time.sleep(0.02)
    assert 0.02 <= first < timer.time_taken_sec
    timer.stop()
    stopped = timer.time_taken_ns
    time.sleep(0.01)
    assert timer.time_taken_ns == stopped


def test_timer_wall_clock_times_are_local_iso_8601():
    before = datetime.now().astimezone()
    with Timer(silent=True) as timer:
        time.sleep(0.01)
    assert before <= timer.start_datetime <= timer.end_datetime <= datetime.now().astimezone()
    assert timer.start_datetime.tzinfo is not None
    assert re.fullmatch(ISO, timer.start_time_str) and re.fullmatch(ISO, timer.end_time_str)
    assert datetime.fromisoformat(timer.end_time_str) == timer.end_datetime


def test_timer_logs_start_alert_and_end():
    lines: list = []
    with Timer(task="Load", i=4, max_i=10, logger=lines.append) as timer:
        timer.alert("halfway")
        timer.alert()
    start, alert, bare_alert, end = lines
    assert re.fullmatch(rf"\(Load\) \[05/10\] Started at {ISO}\.\.\.", start), start
    assert re.fullmatch(r"\(Load\) \[05/10\] Timer has been running for \d+\.\d+ \w+\. halfway", alert), alert
    assert bare_alert.endswith(".") and "halfway" not in bare_alert
    assert end == f"(Load) [05/10] ...completed in {timer.time_taken_str}."


@pytest.mark.parametrize(
    "options, prefix",
    [({}, ""), ({"i": 2}, "[2] "), ({"i": 0, "max_i": 3}, "[1/3] "), ({"i": 8, "max_i": 100}, "[009/100] ")],
)
def test_timer_single_line_and_loop_prefixes(options, prefix):
    lines: list = []
    with Timer(single_line=True, logger=lines.append, **options) as timer:
        pass
    assert lines == [f"{prefix}Started at {timer.start_time_str}, completed in {timer.time_taken_str}."]


@pytest.mark.parametrize("quiet", [{"silent": True}, {"logger": None}, {"logger": False}])
def test_timer_can_be_quiet(quiet, capsys):
    with Timer(task="quiet", **quiet) as timer:
        timer.alert("still quiet")
    assert not timer.should_log
    assert capsys.readouterr().out == ""


def test_timer_prints_by_default(capsys):
    with Timer(task="loud"):
        pass
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith("(loud) Started at ") and "completed in" in out[1]


def test_timer_stops_when_the_block_raises():
    with pytest.raises(KeyError, match="boom"):
        with Timer(silent=True) as timer:
            raise KeyError("boom")
    assert timer.has_stopped


def test_timer_used_out_of_order_raises_timer_error():
    timer = Timer("job", silent=True)
    assert repr(timer) == "<Timer 'job' not started>" and timer.start_datetime is None
    for use in (timer.stop, timer.alert, lambda: timer.time_taken_sec, lambda: timer.start_time_str):
        with pytest.raises(TimerError, match="Timer 'job' has not been started; call start"):
            use()
    timer.start()
    with pytest.raises(TimerError, match=f"Timer 'job' was already started at {ISO}; a Timer runs once"):
        timer.start()
    with pytest.raises(TimerError, match="has not been stopped"):
        timer.end_time_str
    assert repr(timer).startswith("<Timer 'job' running for ")
    timer.stop()
    for use in (timer.stop, timer.alert):
        with pytest.raises(TimerError, match=f"Timer 'job' was already stopped at {ISO}"):
            use()
    assert repr(timer) == f"<Timer 'job' stopped after {timer.time_taken_str}>"
    assert issubclass(TimerError, RuntimeError)


def test_timer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="time_taken\\(format='minutes'\\): unknown format; allowed: str, "):
        with Timer(silent=True) as timer:
            pass
        timer.time_taken("minutes")
    with pytest.raises(ConfigError, match="logger='print' must be a callable"):
        Timer(logger="print")
    with pytest.raises(ConfigError, match="max_i=-1 must be an integer >= 0"):
        Timer(i=0, max_i=-1)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.0, "0.0 seconds"),
        (5e-07, "500.0 nanoseconds"),
        (0.0012345, "1.23 milliseconds"),
        (0.25, "250.0 milliseconds"),
        (1.5, "1.5 seconds"),
        (59.999, "1.0 mins"),
        (90, "1.5 mins"),
        (3600, "1.0 hours"),
        (3 * 86400, "3.0 days"),
    ],
)
def test_readable_seconds_picks_the_largest_filled_unit(seconds, text):
    assert readable_seconds(seconds) == text


# ----- ProgressBar -----------------------------------------------------------------------------


def test_progress_bar_over_a_dict_yields_key_value_pairs():
    out = io.StringIO()
    scores = {"a": 1, "b": 2, "c": 3}
    bar = ProgressBar(scores, desc="scores", style="std", file=out)
    assert list(bar) == [("a", 1), ("b", 2), ("c", 3)]
    assert (bar.n, bar.total) == (3, 3)
    assert "3/3" in out.getvalue()
    assert {key: value * 2 for key, value in ProgressBar(scores, disable=True)} == {"a": 2, "b": 4, "c": 6}


def test_progress_bar_shows_failure_when_the_iterable_raises():
    def items():
        yield 1
        raise LookupError("source gone")

    out = io.StringIO()
    bar = ProgressBar(items(), total=3, style="std", file=out)
    with pytest.raises(LookupError, match="source gone"):
        list(bar)
    assert bar.n == 1 and "closed" in repr(bar)
    assert "\x1b[31m" in out.getvalue(), "a failed iteration is drawn red"


def test_progress_bar_stop_set_n_set_unit_and_appended_description():
    out = io.StringIO()
    bar = ProgressBar(total=10, desc="work", unit="doc", style="std", file=out, color="blue")
    bar.update(3)
    bar.set_n(7)
    bar.set_unit("page")
    bar.refresh()
    bar.stop("cancelled", close=False)
    assert bar.n == 7 and "closed" not in repr(bar)
    bar.success("done", append_desc=False)
    text = out.getvalue()
    assert "\x1b[34m" in text, "color= is tqdm's colour"
    assert "7/10" in text and "page/s" in text
    assert "[cancelled] work" in text and "done:" in text
    assert "closed" in repr(bar)


def test_the_timer_example_in_the_progress_guide_runs(capsys):
    guide = (REPO / "docs" / "progress.md").read_text().split("## Timer", 1)[1]
    (example,) = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    exec(compile(example, "docs/progress.md", "exec"), {})
    assert "(Loading) ...completed in" in capsys.readouterr().out
