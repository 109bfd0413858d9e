"""Every exception concurry_ray raises, in one place.

The tree::

    Exception
    ├── ValueError
    │   └── ConfigError              bad option or argument, raised at .options()/.init()
    ├── TypeError
    │   └── SerializationError       an argument, result or exception cannot be pickled
    ├── TimeoutError
    │   └── CallTimeoutError         a call did not finish within its deadline
    └── RuntimeError
        ├── WorkerInitError          the user's constructor raised (original as __cause__)
        ├── WorkerCrashedError       the worker process/actor died while running a call
        ├── PoolStoppedError         the handle was used after stop()
        ├── LimitsUnavailableError   the limits holder cannot be reached
        ├── RetryValidationError     retry_until rejected every attempt
        └── TimerError               a Timer was used out of order (stop before start, start twice)

Each subclasses the builtin a user would naturally catch, so ``except ValueError``
still works for configuration mistakes.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Sequence


class ConfigError(ValueError):
    """An option or argument has a value that is not allowed."""


class SerializationError(TypeError):
    """An argument, result or exception could not be pickled to cross a process boundary."""


class CallTimeoutError(TimeoutError):
    """A call did not complete within the time allowed."""


class WorkerInitError(RuntimeError):
    """The worker's constructor raised; the original exception is ``__cause__``."""


class WorkerCrashedError(RuntimeError):
    """The process or Ray actor hosting a worker died while calls were in flight."""


class PoolStoppedError(RuntimeError):
    """A worker or pool handle was used after ``stop()``."""


class PoolNotFoundError(LookupError):
    """No pool of the given name exists (``get_pool``, ``remove_pool``)."""


class LimitsUnavailableError(RuntimeError):
    """The holder of a shared LimitSet cannot be reached."""


class RetryValidationError(RuntimeError):
    """Every attempt's result was rejected by ``retry_until``.

    ``attempts`` lists each attempt's result (or exception), oldest first.
    """

    def __init__(self, message: str, attempts: Sequence[Any] = ()):
        super().__init__(message)
        self.attempts = list(attempts)

    def __reduce__(self):
        return (type(self), (self.args[0], self.attempts))


class TimerError(RuntimeError):
    """A :class:`~concurry_ray.Timer` was used out of order: read or stopped before start, started or stopped twice."""


def closest(name: str, allowed: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelt name, or ''."""
    match = difflib.get_close_matches(str(name), list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def attach_remote_traceback(exc: BaseException, tb_text: str, where: str) -> BaseException:
    """Attach the traceback text of a remote exception to it as a note."""
    note = f"\nRemote traceback ({where}):\n{tb_text.rstrip()}"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    return exc
