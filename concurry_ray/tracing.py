"""OpenTelemetry tracing of calls, through ``opentelemetry-api`` only.

A call made through a handle is traced when the caller has an active span
(:func:`wanted`). The caller side then opens a PRODUCER
span ``"{WorkerClass}.{method}"`` (:class:`CallerSpan`) and puts its W3C trace
context, a plain dict, in the call (``Call.trace``), so it crosses threads,
processes and Ray actors with the call. The worker side runs the method inside a
CONSUMER span of the same name, child of the PRODUCER span, attached as the
current span while the method runs (:func:`consuming`). Retries add events and
``concurry.attempt`` (:func:`retrying`); a limits acquisition is a child span
``limits.acquire`` (:func:`acquiring`).

Spans go to the global tracer provider under the tracer name ``concurry_ray``.
The SDK is never imported here: without one the API's no-op tracer still
carries the caller's trace context into the worker. Without ``opentelemetry``
installed at all, nothing is traced. A call made outside any span costs one
context read.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from time import monotonic
from typing import Any, Callable, Iterator, Optional

from .futures import Future, peek, when_all_done

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # tracing is off: no call is ever traced
    trace = None

TRACER_NAME = "concurry_ray"

_NOTHING = nullcontext()
_tracer: Any = None

if trace is not None:
    _PROPAGATOR = TraceContextTextMapPropagator()
    _current_context = otel_context.get_current


# ----- deciding -----------------------------------------------------------------------


def wanted() -> bool:
    """Whether a call made now is traced: the caller has an active span (one with a valid context).

    A call made outside any span starts no trace of its own, so an untraced program pays one
    context read per call, and a program that sets a provider pays for the calls it traces only.
    """
    return trace is not None and bool(_current_context()) and trace.get_current_span().get_span_context().is_valid


def _get_tracer() -> Any:
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer(TRACER_NAME)
    return _tracer


def _recording_span() -> Any:
    """The caller's current span if it records, else None (also without opentelemetry)."""
    if trace is None or not _current_context():
        return None
    span = trace.get_current_span()
    return span if span.is_recording() else None


# ----- attributes -----------------------------------------------------------------------


def call_attributes(options: Any, worker_class: str, method: str, worker_index: Optional[int] = None) -> dict:
    """The attributes of both spans of a call: mode, worker class, method, pool name and worker index
    (the last two only when known)."""
    attributes = {"concurry.mode": options.mode, "concurry.worker_class": worker_class, "concurry.method": method}
    if options.name:
        attributes["concurry.pool"] = options.name
    if worker_index is not None:
        attributes["concurry.worker_index"] = worker_index
    return attributes


def worker_number(label: str) -> Optional[int]:
    """The number ``n`` in a worker's label ``"{pool}#{n} ({mode})"``; None for a label without one."""
    number = label.rpartition("#")[2].split(" ", 1)[0]
    return int(number) if number.isdigit() else None


def _fail(span: Any, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


# ----- the two sides of a call -----------------------------------------------------------


class CallerSpan:
    """The PRODUCER span of one call: started when the call is made, ended when its future settles.

    ``carrier`` is the W3C trace context of the span (``traceparent``), to send with the call.
    """

    __slots__ = ("span", "carrier")

    def __init__(self, options: Any, worker_class: str, method: str, broadcast: bool = False) -> None:
        attributes = call_attributes(options, worker_class, method)
        if broadcast:
            attributes["concurry.broadcast"] = True
        self.span = _get_tracer().start_span(
            f"{worker_class}.{method}", kind=trace.SpanKind.PRODUCER, attributes=attributes
        )
        self.carrier: dict = {}
        _PROPAGATOR.inject(self.carrier, trace.set_span_in_context(self.span))

    def follow(self, send: Callable[..., Future], *args: Any) -> Future:
        """The future of ``send(*args)``; the span ends when it settles, or at once if ``send`` raises."""
        try:
            future = send(*args)
        except BaseException as error:
            self.end(error)
            raise
        future.add_done_callback(self._settled)
        return future

    def follow_all(self, send: Callable[..., list], *args: Any) -> list:
        """The futures of ``send(*args)`` (a broadcast); the span ends when the last one settles,
        with the first error among them, or at once if ``send`` raises or sends nothing."""
        try:
            futures = send(*args)
        except BaseException as error:
            self.end(error)
            raise
        when_all_done(futures, lambda: self.end(next((e for e in (peek(f)[1] for f in futures) if e is not None), None)))
        return futures

    def _settled(self, future: Future) -> None:
        self.end(peek(future)[1])

    def end(self, error: Optional[BaseException] = None) -> None:
        """End the span; with ``error`` (the call failed or was cancelled) its status is ERROR."""
        if error is not None:
            _fail(self.span, error)
        self.span.end()


def consuming(carrier: dict, name: str, attributes: dict) -> AbstractContextManager:
    """Run the block inside a CONSUMER span ``name``, child of the caller-side span in ``carrier``,
    attached as the current span; an exception leaving the block sets its status to ERROR.

    Without a tracer provider in this process the span records nothing, but the
    caller's trace context is still current in the block.
    """
    if trace is None:
        return _NOTHING
    parent = _PROPAGATOR.extract(carrier)
    span = _get_tracer().start_span(name, parent, kind=trace.SpanKind.CONSUMER, attributes=attributes)
    return trace.use_span(span, end_on_exit=True)


def retrying(attempt: int, wait_seconds: float, reason: str) -> None:
    """Record on the current span that attempt number ``attempt`` of the call follows in ``wait_seconds``:
    the attribute ``concurry.attempt`` and an event ``retry`` (``reason``: what the last attempt did)."""
    span = _recording_span()
    if span is None:
        return
    span.set_attribute("concurry.attempt", attempt)
    span.add_event(
        "retry",
        {"concurry.attempt": attempt, "concurry.retry.wait_seconds": wait_seconds, "concurry.retry.reason": reason},
    )


def acquiring(keys: Any) -> AbstractContextManager:
    """Around a limits acquisition: a child span ``limits.acquire`` of the current span, when that one
    records, with ``concurry.limits.keys`` and ``concurry.limits.wait_seconds``; else nothing."""
    if _recording_span() is None:
        return _NOTHING
    return _acquire_span(tuple(keys))


@contextmanager
def _acquire_span(keys: tuple) -> Iterator[None]:
    started = monotonic()
    span = _get_tracer().start_span("limits.acquire", attributes={"concurry.limits.keys": keys})
    with trace.use_span(span, end_on_exit=True):
        try:
            yield
        finally:
            span.set_attribute("concurry.limits.wait_seconds", monotonic() - started)
