"""Timer: a stopwatch for a block of code that can say how long it took."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Callable, Optional, Union

from .errors import ConfigError, TimerError

_UNITS = (  # largest first: a duration is shown in the largest unit it fills at least once
    ("days", 86400.0),
    ("hours", 3600.0),
    ("mins", 60.0),
    ("seconds", 1.0),
    ("milliseconds", 1e-3),
    ("microseconds", 1e-6),
    ("nanoseconds", 1e-9),
)

_FORMATS = {  # time_taken(format) -> the property it reads
    **dict.fromkeys(("str", "string"), "time_taken_str"),
    **dict.fromkeys(("s", "sec", "seconds"), "time_taken_sec"),
    **dict.fromkeys(("ms", "milli", "millis", "millisec", "milliseconds"), "time_taken_ms"),
    **dict.fromkeys(("us", "micro", "micros", "microsec", "microseconds"), "time_taken_us"),
    **dict.fromkeys(("ns", "nano", "nanos", "nanosec", "nanoseconds"), "time_taken_ns"),
    **dict.fromkeys(("dt", "td", "datetime", "timedelta"), "time_taken_td"),
}


def readable_seconds(seconds: float, decimals: int = 2) -> str:
    """A duration in the largest unit it fills at least once: ``"250.0 milliseconds"``, ``"1.5 mins"``."""
    for unit, size in _UNITS:
        value = round(seconds / size, decimals)
        if value >= 1:
            return f"{value} {unit}"
    return f"{seconds} seconds"


def _readable_datetime(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


class Timer:
    """A stopwatch for a block of code, as a context manager or with :meth:`start` and :meth:`stop`.

    ::

        with Timer(task="Loading") as timer:   # prints "(Loading) Started at 2025-...+00:00..."
            load()                              # prints "(Loading) ...completed in 1.23 seconds."
        timer.time_taken_sec                    # 1.2345...

    Messages go to ``logger`` (``print`` unless you pass another callable);
    ``silent=True``, ``logger=None`` or ``logger=False`` keep it quiet.
    ``single_line=True`` prints one line when the timer stops instead of two.
    In a loop, ``i`` (counted from 0) and ``max_i`` prefix messages with
    ``[03/10]``; ``i`` alone with ``[2]``.

    The elapsed time (``time_taken_sec``, ``_ms``, ``_us``, ``_ns``, ``_td``,
    ``_str``, or ``time_taken(format)``) is measured with ``time.perf_counter_ns``;
    while the timer runs it is the time so far. A timer runs once: reading it
    before :meth:`start`, stopping it twice or starting it again raises
    :class:`TimerError` (make a new Timer instead). Leaving the ``with`` block by
    an exception stops the timer and lets the exception through.
    ``start_datetime`` and ``end_datetime`` are the local wall-clock times
    (timezone-aware; None until then), ``start_time_str`` and ``end_time_str``
    the same in ISO 8601.
    """

    def __init__(
        self,
        task: str = "",
        *,
        logger: Union[Callable[[str], Any], None, bool] = print,
        silent: bool = False,
        single_line: bool = False,
        i: Optional[int] = None,
        max_i: Optional[int] = None,
    ) -> None:
        if logger is not None and logger is not False and not callable(logger):
            raise ConfigError(f"logger={logger!r} must be a callable taking one string, None or False")
        for name, value in (("i", i), ("max_i", max_i)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name}={value!r} must be an integer >= 0 or None")
        self.task = str(task)
        self.logger: Optional[Callable[[str], Any]] = None if logger is False else logger
        self.silent = silent
        self.single_line = single_line
        self.i = i
        self.max_i = max_i
        self._start_ns: Optional[int] = None
        self._end_ns: Optional[int] = None
        self.start_datetime: Optional[datetime] = None  # local and timezone-aware, like end_datetime
        self.end_datetime: Optional[datetime] = None

    # ----- running ---------------------------------------------------------------

    def start(self) -> None:
        """Start the timer (TimerError if it was started before) and log the start unless single_line."""
        if self.has_started:
            raise TimerError(f"{self._name()} was already started at {self.start_time_str}; a Timer runs once")
        self.start_datetime = datetime.now().astimezone()
        self._start_ns = time.perf_counter_ns()
        if not self.single_line:
            self._log(f"Started at {self.start_time_str}...")

    def alert(self, text: Optional[str] = None) -> None:
        """Log how long the timer has been running so far, with an optional note."""
        self._require_running("alert()")
        note = f" {text}" if isinstance(text, str) else ""
        self._log(f"Timer has been running for {self.time_taken_str}.{note}")

    def stop(self) -> None:
        """Stop the timer (TimerError if it is not running) and log the time taken."""
        self._require_running("stop()")
        self._end_ns = time.perf_counter_ns()
        self.end_datetime = datetime.now().astimezone()
        if self.single_line:
            self._log(f"Started at {self.start_time_str}, completed in {self.time_taken_str}.")
        else:
            self._log(f"...completed in {self.time_taken_str}.")

    def __enter__(self) -> "Timer":
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def has_started(self) -> bool:
        """True once :meth:`start` was called."""
        return self._start_ns is not None

    @property
    def has_stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._end_ns is not None

    @property
    def should_log(self) -> bool:
        """True when start, alert and stop messages go to the logger."""
        return self.logger is not None and not self.silent

    # ----- reading ---------------------------------------------------------------

    @property
    def time_taken_ns(self) -> int:
        """Nanoseconds from start to stop, or to now while the timer runs."""
        self._require_started()
        end = self._end_ns if self._end_ns is not None else time.perf_counter_ns()
        return end - self._start_ns

    @property
    def time_taken_us(self) -> float:
        """Microseconds from start to stop (or to now)."""
        return self.time_taken_ns / 1e3

    @property
    def time_taken_ms(self) -> float:
        """Milliseconds from start to stop (or to now)."""
        return self.time_taken_ns / 1e6

    @property
    def time_taken_sec(self) -> float:
        """Seconds from start to stop (or to now)."""
        return self.time_taken_ns / 1e9

    @property
    def time_taken_td(self) -> timedelta:
        """The time taken as a ``timedelta`` (microsecond resolution)."""
        return timedelta(microseconds=self.time_taken_us)

    @property
    def time_taken_str(self) -> str:
        """The time taken in words: ``"1.23 seconds"``, ``"250.0 milliseconds"``, ``"2.5 mins"``."""
        return readable_seconds(self.time_taken_sec)

    time_taken_human = time_taken_str

    def time_taken(self, format: Any) -> Union[int, float, str, timedelta]:
        """The time taken in ``format``: ``"s"``, ``"ms"``, ``"us"``, ``"ns"``, ``"td"`` or ``"str"`` (or ``str``).

        Longer spellings (``"seconds"``, ``"milliseconds"``, ``"timedelta"``, ...) work too.
        """
        key = "str" if format is str else format
        name = _FORMATS.get(key) if isinstance(key, str) else None
        if name is None:
            raise ValueError(f"time_taken(format={format!r}): unknown format; allowed: {', '.join(_FORMATS)}")
        return getattr(self, name)

    @property
    def start_time_str(self) -> str:
        """When the timer started, in ISO 8601 with microseconds and UTC offset."""
        self._require_started()
        return _readable_datetime(self.start_datetime)

    @property
    def end_time_str(self) -> str:
        """When the timer stopped, in ISO 8601 with microseconds and UTC offset."""
        if self.end_datetime is None:
            raise TimerError(f"{self._name()} has not been stopped; call stop() first")
        return _readable_datetime(self.end_datetime)

    def __repr__(self) -> str:
        if not self.has_started:
            state = "not started"
        else:
            state = f"{'stopped after' if self.has_stopped else 'running for'} {self.time_taken_str}"
        return f"<Timer{f' {self.task!r}' if self.task else ''} {state}>"

    # ----- messages --------------------------------------------------------------

    def _require_started(self) -> None:
        if not self.has_started:
            raise TimerError(f"{self._name()} has not been started; call start() or use it in a with block")

    def _require_running(self, action: str) -> None:
        self._require_started()
        if self.has_stopped:
            raise TimerError(f"{self._name()} was already stopped at {self.end_time_str}; {action} needs it running")

    def _name(self) -> str:
        return f"Timer {self.task!r}" if self.task else "Timer"

    def _log(self, message: str) -> None:
        if self.should_log:
            self.logger(self._prefix() + message)

    def _prefix(self) -> str:
        task = f"({self.task}) " if self.task else ""
        if self.i is None:
            return task
        if self.max_i is None:
            return f"{task}[{self.i}] "
        width = len(str(self.max_i))
        return f"{task}[{self.i + 1:0{width}}/{self.max_i}] "
