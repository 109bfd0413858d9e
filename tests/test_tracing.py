"""OpenTelemetry tracing: every call continues the caller's trace into the worker, in every mode.

The driver's spans go to an SDK ``InMemorySpanExporter``. Process workers and Ray
actors record spans only where a provider is configured in their own process, so
there the method reports what it sees (trace id, span ids), and a worker built
with ``record=True`` installs a provider of its own and hands its spans back.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import ALL_MODES, RAY_ACTOR, wait_for
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tracing_workers import Queued, QueuedMixed, Traced

from concurry_ray import ResourceLimit, gather

IN_PROCESS = ["sync", "asyncio", "thread"]
OWN_PROCESS = ["process", "ray"]
tracer = trace.get_tracer("tests")


@pytest.fixture(scope="module")
def exporter():
    """An in-memory exporter on the global SDK provider (set here unless another test module set one)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()  # later test modules' spans are not kept


@pytest.fixture
def spans(exporter):
    exporter.clear()
    return exporter


def child_of(spans, parent, kind, name=None):
    """The one finished span of ``kind`` (and ``name``, if given) whose parent is ``parent`` (a span or a
    span id), waiting for it: a PRODUCER span ends in its future's done-callback, which may run just
    after ``result()`` returns."""
    parent_id = parent if isinstance(parent, int) else parent.get_span_context().span_id
    found: list = []

    def look() -> bool:
        found[:] = [
            s for s in spans.get_finished_spans()
            if s.kind == kind and s.parent and s.parent.span_id == parent_id and name in (None, s.name)
        ]
        return bool(found)

    wait_for(look, timeout=10)
    assert len(found) == 1, found
    return found[0]


def attributes(mode: str, method: str, **more) -> dict:
    """The attributes both spans of a call on a ``Traced`` worker carry, and ``more``."""
    return {"concurry.mode": mode, "concurry.worker_class": "Traced", "concurry.method": method, **more}


# ----- every mode: the method runs in the caller's trace -------------------------------------


@pytest.mark.parametrize("method", ["where", "awhere"])
@pytest.mark.parametrize("mode", ALL_MODES)
def test_the_method_runs_in_the_callers_trace(mode, method, mode_opts, spans):
    with Traced.options(**mode_opts(mode)).init() as worker:
        with tracer.start_as_current_span("caller") as caller:
            inside = getattr(worker, method)().result(timeout=60)
    producer = child_of(spans, caller, SpanKind.PRODUCER)
    assert producer.name == f"Traced.{method}"
    assert inside["trace_id"] == caller.get_span_context().trace_id
    if mode in IN_PROCESS:  # the provider is the caller's: the method runs in the recorded CONSUMER span
        assert inside["recording"] and inside["parent_id"] == producer.context.span_id
    else:  # no provider in the worker's process: the caller-side span's context is current, unrecorded
        assert not inside["recording"] and inside["span_id"] == producer.context.span_id


@pytest.mark.parametrize("mode", ALL_MODES)
def test_a_broadcast_is_one_producer_span_over_every_workers_call(mode, mode_opts, spans):
    size = 1 if mode in ("sync", "asyncio") else 2
    with Traced.options(**mode_opts(mode, max_workers=size)).init() as pool:
        with tracer.start_as_current_span("caller") as caller:
            inside = gather(pool.broadcast("where"), timeout=60)
    producer = child_of(spans, caller, SpanKind.PRODUCER)
    assert producer.name == "Traced.where" and producer.attributes["concurry.broadcast"] is True
    assert len(inside) == size and {i["trace_id"] for i in inside} == {caller.get_span_context().trace_id}
    if mode in IN_PROCESS:
        consumers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CONSUMER]
        assert sorted(i["span_id"] for i in inside) == sorted(s.context.span_id for s in consumers)
        assert {s.parent.span_id for s in consumers} == {producer.context.span_id}
    else:
        assert {i["span_id"] for i in inside} == {producer.context.span_id}


@pytest.mark.parametrize("mode", OWN_PROCESS)
def test_a_worker_process_with_a_provider_records_its_consumer_and_limits_spans(mode, mode_opts, spans):
    options = mode_opts(mode, limits=[ResourceLimit("slots", 1)])
    with Traced.options(**options).init(record=True) as worker:
        with tracer.start_as_current_span("caller") as caller:
            inside = worker.where().result(timeout=60)
            limited = worker.limited().result(timeout=60)
        recorded = worker.recorded().result(timeout=60)
    producer = child_of(spans, caller, SpanKind.PRODUCER, name="Traced.where")
    consumer = next(r for r in recorded if r["parent_id"] == producer.context.span_id)
    assert consumer["span_id"] == inside["span_id"] and inside["recording"]
    assert consumer["name"] == "Traced.where" and consumer["kind"] == "CONSUMER"
    assert consumer["trace_id"] == caller.get_span_context().trace_id
    assert consumer["attributes"] == attributes(mode, "where", **{"concurry.worker_index": 0})
    acquire = next(r for r in recorded if r["name"] == "limits.acquire")
    assert acquire["parent_id"] == limited["span_id"]
    assert acquire["attributes"]["concurry.limits.keys"] == ("slots",)


# ----- in-process modes: the whole span tree ------------------------------------------------


@pytest.mark.parametrize("mode", IN_PROCESS)
def test_the_caller_and_worker_spans_form_a_tree(mode, spans):
    with Traced.options(mode=mode, name="traced").init() as worker:
        with tracer.start_as_current_span("caller") as caller:
            worker.where().result(timeout=30)
    producer = child_of(spans, caller, SpanKind.PRODUCER)
    consumer = child_of(spans, producer.context.span_id, SpanKind.CONSUMER)
    assert producer.name == consumer.name == "Traced.where"
    assert producer.context.trace_id == consumer.context.trace_id == caller.get_span_context().trace_id
    assert dict(producer.attributes) == attributes(mode, "where", **{"concurry.pool": "traced"})
    assert dict(consumer.attributes) == attributes(mode, "where", **{"concurry.pool": "traced", "concurry.worker_index": 0})
    assert producer.status.status_code == consumer.status.status_code == StatusCode.UNSET


@pytest.mark.parametrize("mode", IN_PROCESS)
def test_a_failed_call_has_error_spans_with_the_exception(mode, spans):
    with Traced.options(mode=mode).init() as worker:
        with tracer.start_as_current_span("caller") as caller:
            with pytest.raises(ValueError, match="boom"):
                worker.fail().result(timeout=30)
    producer = child_of(spans, caller, SpanKind.PRODUCER)
    consumer = child_of(spans, producer.context.span_id, SpanKind.CONSUMER)
    for span in (producer, consumer):
        assert span.status.status_code == StatusCode.ERROR
        assert "ValueError: boom" in span.status.description
        assert [e.attributes["exception.type"] for e in span.events if e.name == "exception"] == ["ValueError"]


@pytest.mark.parametrize("failures, status", [(2, StatusCode.UNSET), (5, StatusCode.ERROR)], ids=["recovers", "gives-up"])
@pytest.mark.parametrize("mode", IN_PROCESS)
def test_retries_record_the_attempt(mode, failures, status, spans):
    options = {"mode": mode, "num_retries": 2, "retry_wait": 0, "retry_on": [ConnectionError]}
    with Traced.options(**options).init() as worker:
        with tracer.start_as_current_span("caller") as caller:
            future = worker.flaky(failures)
            future.exception(timeout=30)
    consumer = child_of(spans, child_of(spans, caller, SpanKind.PRODUCER).context.span_id, SpanKind.CONSUMER)
    assert consumer.attributes["concurry.attempt"] == 3
    retries = [e.attributes for e in consumer.events if e.name == "retry"]
    assert [r["concurry.attempt"] for r in retries] == [2, 3]
    assert retries[0]["concurry.retry.reason"] == "raised ConnectionError: attempt 1 fails"
    assert consumer.status.status_code == status


@pytest.mark.parametrize("method", ["limited", "alimited"])
@pytest.mark.parametrize("mode", IN_PROCESS)
def test_a_limits_acquisition_is_a_child_span(mode, method, spans):
    with Traced.options(mode=mode, limits=[ResourceLimit("slots", 1)]).init() as worker:
        with tracer.start_as_current_span("caller") as caller:
            inside = getattr(worker, method)().result(timeout=30)
    consumer = child_of(spans, child_of(spans, caller, SpanKind.PRODUCER).context.span_id, SpanKind.CONSUMER)
    assert inside["span_id"] == consumer.context.span_id  # the acquisition's span is over, the call's is current again
    acquire = child_of(spans, consumer.context.span_id, SpanKind.INTERNAL)
    assert acquire.name == "limits.acquire"
    assert acquire.attributes["concurry.limits.keys"] == ("slots",)
    assert 0 <= acquire.attributes["concurry.limits.wait_seconds"] < 10


def test_a_call_waiting_for_an_argument_future_keeps_its_parent(spans):
    with Traced.options(mode="thread").init() as worker:
        with tracer.start_as_current_span("caller") as caller:
            first = worker.where()
            value, inside = worker.echo(first).result(timeout=30)
    assert value == first.result(timeout=5)
    producer = child_of(spans, caller, SpanKind.PRODUCER, name="Traced.echo")
    assert inside["parent_id"] == producer.context.span_id


# ----- Ray: batched calls ---------------------------------------------------------------


@pytest.mark.parametrize("cls", [Queued, QueuedMixed], ids=["plain-actor", "asyncio-actor"])
def test_batched_ray_calls_each_keep_their_own_parent(cls, ray_runtime, spans):
    with cls.options(mode="ray", actor_options=RAY_ACTOR).init() as worker:
        worker.where().result(timeout=60)
        busy = [worker.slow(0.5) for _ in range(2)]  # fill the actor's window, so the next calls queue up
        callers, futures = [], []
        for index in range(6):
            with tracer.start_as_current_span(f"caller-{index}") as caller:
                callers.append(caller)
                futures.append(worker.where())
        seen = gather(futures, timeout=60)
        gather(busy, timeout=60)
    assert len({inside["task"] for inside in seen}) < len(seen), "the queued calls were not batched"
    for caller, inside in zip(callers, seen):
        producer = child_of(spans, caller, SpanKind.PRODUCER)
        assert inside["trace_id"] == caller.get_span_context().trace_id
        assert inside["span_id"] == producer.context.span_id


# ----- without an SDK, without opentelemetry ------------------------------------------------


def run_script(code: str) -> str:
    """Run ``code`` in a fresh interpreter (no tracer provider set there); its stdout."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_an_sdk_only_a_caller_with_a_span_context_is_traced():
    out = run_script(
        """
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
        from tracing_workers import Traced
        from concurry_ray import tracing

        remote = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(1))
        for mode in ("sync", "thread"):
            with Traced.options(mode=mode).init() as worker:
                assert not tracing.wanted()
                assert worker.where().result(timeout=30)["trace_id"] == 0
                with trace.use_span(NonRecordingSpan(remote)):
                    assert tracing.wanted()
                    inside = worker.awhere().result(timeout=30)
                assert (inside["trace_id"], inside["span_id"], inside["recording"]) == (0x1234, 0x5678, False)
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_without_opentelemetry_calls_run_untraced():
    out = run_script(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
        from concurry_ray import ResourceLimit, Worker, tracing
        from concurry_ray.host import Host
        from concurry_ray.options import WorkerOptions
        from concurry_ray.protocol import Call, WorkerSpec

        class Flaky(Worker):
            def __init__(self):
                self.calls = 0

            def work(self, x):
                self.calls += 1
                with self.limits.acquire(requested={"slots": 1}):
                    if self.calls == 1:
                        raise ConnectionError("once")
                    return x

            def echo(self, x):
                return x

        options = {"num_retries": 1, "retry_wait": 0, "limits": [ResourceLimit("slots", 1)]}
        with Flaky.options(mode="thread", **options).init() as worker:
            assert not tracing.wanted()
            assert worker.work(7).result(timeout=30) == 7
        host = Host(WorkerSpec(Flaky, (), {}, WorkerOptions(mode="sync"), "Flaky#0 (sync)"))
        traceparent = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        assert host.run(Call("echo", (5,), {}, traceparent)) == 5  # a traced call from elsewhere still runs
        print("ok")
        """
    )
    assert out.strip() == "ok"
