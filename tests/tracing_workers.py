"""Worker classes for tests/test_tracing.py (a module of its own, so worker processes and Ray actors import them)."""

from __future__ import annotations

import asyncio
import time

from opentelemetry import trace

from concurry_ray import Worker

_EXPORTER = None  # the in-memory exporter of a worker process that records its own spans


def seen() -> dict:
    """What the running method sees of the current span: its ids, its parent's and whether it records."""
    span = trace.get_current_span()
    context = span.get_span_context()
    parent = getattr(span, "parent", None)
    return {
        "trace_id": context.trace_id,
        "span_id": context.span_id,
        "parent_id": parent.span_id if parent is not None else None,
        "recording": span.is_recording(),
    }


def record_here() -> None:
    """Give this process an SDK tracer provider that keeps finished spans in memory, as a
    ``worker_process_setup_hook`` would in a Ray worker (no-op if it has one already)."""
    global _EXPORTER
    if _EXPORTER is not None:
        return
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    _EXPORTER = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


def span_record(span) -> dict:
    """A finished SDK span as plain, picklable data."""
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": span.context.trace_id,
        "span_id": span.context.span_id,
        "parent_id": span.parent.span_id if span.parent is not None else None,
        "attributes": dict(span.attributes),
        "status": span.status.status_code.name,
        "events": [(event.name, dict(event.attributes)) for event in span.events],
    }


class Traced(Worker):
    """Reports the span it runs in; fails, retries and takes limits on demand."""

    def __init__(self, record: bool = False) -> None:
        if record:
            record_here()
        self.attempts = 0

    def where(self) -> dict:
        return seen()

    async def awhere(self) -> dict:
        await asyncio.sleep(0)
        return seen()

    def echo(self, value) -> tuple:
        return value, seen()

    def fail(self) -> None:
        raise ValueError("boom")

    def flaky(self, failures: int) -> dict:
        """Raise ConnectionError on the first ``failures`` attempts."""
        self.attempts += 1
        if self.attempts <= failures:
            raise ConnectionError(f"attempt {self.attempts} fails")
        return seen()

    def limited(self) -> dict:
        with self.limits.acquire(requested={"slots": 1}):
            return seen()

    async def alimited(self) -> dict:
        async with self.limits.acquire(requested={"slots": 1}):
            return seen()

    def recorded(self) -> list:
        """The spans this process recorded itself (with ``record=True``)."""
        return [span_record(span) for span in _EXPORTER.get_finished_spans()] if _EXPORTER is not None else []


class Queued(Worker):
    """A sync-only worker, so calls queued behind a slow one reach its Ray actor as one batch task."""

    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def where(self) -> dict:
        import ray

        return {**seen(), "task": ray.get_runtime_context().get_task_id()}


class QueuedMixed(Queued):
    """The same on an asyncio actor (one async method), whose sync calls batch too."""

    async def ping(self) -> str:
        return "pong"
