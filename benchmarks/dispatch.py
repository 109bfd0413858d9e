"""Dispatch overhead: the per-call cost of a trivial method in every mode, next to its raw baseline.

    python benchmarks/dispatch.py [--calls N] [--repeat R] [--modes MODE ...]

Two measures per row, both in microseconds per call:

* "submit N, then gather": submit N calls, then wait for all of them (throughput);
* "one call + result": make one call and wait for its result, N times in a row (latency).

Each mode runs against the thing it wraps: ``thread`` against
``ThreadPoolExecutor(1).submit``, ``process`` against ``ProcessPoolExecutor(1)``
(same ``forkserver`` start method), ``ray`` against a hand-written Ray actor with
the same method. ``sync`` and ``asyncio`` have no baseline and show absolute
figures. Ours and the baseline alternate (in turn first) within each repeat and
the table shows medians, so background load hits both sides alike. A local Ray
runtime (``num_cpus=2``, no dashboard) is started for the ray row only.

What tracing costs, in ``sync`` and ``thread`` mode: the same worker with
``opentelemetry-api`` installed and no SDK (every call asks whether to trace,
and is not traced), and with an SDK whose exporter drops every span and the
calls made inside a span (every call traced), each against one where ``opentelemetry`` cannot be imported. Each side
of these rows runs in a fresh child interpreter of its own (the global tracer
provider can be set only once per process), which measures when asked, so the
two sides still take turns.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional, Protocol

import bench_env
from concurry_ray import Worker, gather

RAY_ACTOR_OPTIONS = {"num_cpus": 0.1}
WARMUP_CALLS = 200
SETTLE_SECONDS = 0.05
"""Pause before every measurement. Without it the side measured right after the
other one is switched off runs up to 2x slower for its whole measurement (the OS
has not yet placed its fresh threads), whichever side that is; see README."""


class Echo(Worker):
    """The trivial worker measured in every mode."""

    def echo(self, x: Any) -> Any:
        return x


def echo(x: Any) -> Any:
    """The same trivial work for the executor baselines."""
    return x


def result(future: Any) -> Any:
    """Wait for one future (ours or ``concurrent.futures``)."""
    return future.result()


class RawEcho:
    """The hand-written Ray actor our ray mode is compared with."""

    def echo(self, x: Any) -> Any:
        return x


class Side(Protocol):
    """One side of a row: something that measures itself when asked."""

    def measure(self, measure: Callable[["Subject", int], float], calls: int) -> float:
        """Microseconds per call that ``measure`` finds over ``calls`` calls."""


@dataclass
class Subject:
    """One thing to measure in this process: how to submit a call, wait for many, and wait for one."""

    submit: Callable[[int], Any]
    gather: Callable[[list], list]
    result: Callable[[Any], Any]

    def measure(self, measure: Callable[["Subject", int], float], calls: int) -> float:
        """``measure`` run here."""
        return measure(self, calls)


@dataclass
class Row:
    """One line of the table: a mode, its baseline (if any) and the target ratio; ``name`` (default:
    the mode) is what the table calls it."""

    mode: str
    ours: Callable[[], ContextManager[Side]]
    baseline_name: str = "-"
    baseline: Optional[Callable[[], ContextManager[Side]]] = None
    target: Optional[float] = None
    runtime: Callable[[], ContextManager] = nullcontext
    name: str = ""

    @property
    def label(self) -> str:
        """The row's name in the table."""
        return self.name or self.mode


@contextmanager
def ours(mode: str, **options: Any) -> Iterator[Subject]:
    """An ``Echo`` worker in ``mode``."""
    with Echo.options(mode=mode, **options).init() as worker:
        yield Subject(worker.echo, gather, result)


@contextmanager
def executor(pool: Any) -> Iterator[Subject]:
    """A ``concurrent.futures`` executor running ``echo``."""
    with pool:
        yield Subject(lambda i: pool.submit(echo, i), lambda futures: [f.result() for f in futures], result)


@contextmanager
def raw_actor() -> Iterator[Subject]:
    """A hand-written Ray actor; waits with ``ray.get``."""
    import ray

    actor = ray.remote(**RAY_ACTOR_OPTIONS)(RawEcho).remote()
    try:
        yield Subject(actor.echo.remote, ray.get, ray.get)
    finally:
        ray.kill(actor)


CHILD_CODE = """
import sys
if {hide_otel}:
    sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
sys.path.insert(0, {folder!r})
import dispatch
dispatch.serve({mode!r}, {sdk})
"""


class Child:
    """A side measured by ``serve`` in a child interpreter: one request line in, one figure out."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    def measure(self, measure: Callable[[Subject, int], float], calls: int) -> float:
        """``measure`` run by the child, on its worker."""
        self.process.stdin.write(f"{measure.__name__} {calls}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())


@contextmanager
def in_child(mode: str, hide_otel: bool = False, sdk: bool = False) -> Iterator[Child]:
    """An ``Echo`` worker in ``mode`` in a child interpreter: without ``opentelemetry`` (``hide_otel``),
    or with an SDK whose exporter drops every span (``sdk``)."""
    code = CHILD_CODE.format(hide_otel=hide_otel, folder=str(Path(__file__).parent), mode=mode, sdk=sdk)
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {mode} child for the tracing rows did not start (exit code {process.wait()})")
        yield Child(process)
    finally:
        process.stdin.close()
        process.wait(timeout=60)


def serve(mode: str, sdk: bool) -> None:
    """In a child interpreter: build ``ours(mode)``, then answer each request "MEASURE CALLS" with a figure
    (with ``sdk``, from inside a span, so that every call is traced)."""
    caller_span = install_dropping_sdk() if sdk else nullcontext()
    with ours(mode) as subject, caller_span:
        print("ready", flush=True)
        for line in sys.stdin:
            name, calls = line.split()
            print(MEASURE_NAMED[name](subject, int(calls)), flush=True)


def install_dropping_sdk() -> ContextManager[Any]:
    """Set an SDK tracer provider whose batch processor hands every span to an exporter that drops it;
    return a span to make the calls in (a call outside any span is not traced)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    trace.set_tracer_provider(provider)
    return trace.get_tracer("benchmark").start_as_current_span("caller")


def tracing_rows(mode: str) -> list[Row]:
    """What tracing costs in ``mode``: the API without an SDK (target: at most 5 % more), and an SDK."""
    return [
        Row(mode, lambda: in_child(mode), "no opentelemetry", lambda: in_child(mode, hide_otel=True), 1.05,
            name=f"{mode}, API, no SDK"),
        Row(mode, lambda: in_child(mode, sdk=True), "no opentelemetry", lambda: in_child(mode, hide_otel=True),
            name=f"{mode}, SDK, no-op export"),
    ]


ROWS = [
    Row("sync", lambda: ours("sync")),
    Row("asyncio", lambda: ours("asyncio")),
    Row("thread", lambda: ours("thread"), "ThreadPoolExecutor(1)", lambda: executor(ThreadPoolExecutor(1)), 1.5),
    Row(
        "process",
        lambda: ours("process"),
        "ProcessPoolExecutor(1)",
        lambda: executor(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"))),
        1.5,
    ),
    Row("ray", lambda: ours("ray", actor_options=RAY_ACTOR_OPTIONS), "raw Ray actor", raw_actor, 1.2, bench_env.ray_runtime),
    *tracing_rows("sync"),
    *tracing_rows("thread"),
]


def submit_gather_us(subject: Subject, calls: int) -> float:
    """Microseconds per call to submit ``calls`` calls and then wait for all of them."""
    start = time.perf_counter()
    results = subject.gather([subject.submit(i) for i in range(calls)])
    elapsed = time.perf_counter() - start
    assert results[-1] == calls - 1
    return elapsed / calls * 1e6


def call_result_us(subject: Subject, calls: int) -> float:
    """Microseconds per call to make one call and wait for its result, ``calls`` times."""
    start = time.perf_counter()
    for i in range(calls):
        subject.result(subject.submit(i))
    return (time.perf_counter() - start) / calls * 1e6


MEASURES = (submit_gather_us, call_result_us)
MEASURE_NAMED = {measure.__name__: measure for measure in MEASURES}


def measure_row(row: Row, calls: int, repeat: int) -> dict:
    """Medians of each measure for ours and the baseline, taking turns in every repeat."""
    samples: dict = {(side, m): [] for side in ("ours", "baseline") for m in MEASURES}
    with ExitStack() as stack:
        stack.enter_context(row.runtime())
        subjects = {"ours": stack.enter_context(row.ours())}
        if row.baseline is not None:
            subjects["baseline"] = stack.enter_context(row.baseline())
        for subject in subjects.values():
            subject.measure(submit_gather_us, WARMUP_CALLS)
        for turn in range(repeat):
            order = list(subjects.items())[:: 1 if turn % 2 == 0 else -1]
            for measure in MEASURES:
                for side, subject in order:
                    time.sleep(SETTLE_SECONDS)
                    samples[side, measure].append(subject.measure(measure, calls))
    return {key: statistics.median(values) for key, values in samples.items() if values}


def format_table(results: list[tuple[Row, dict]]) -> str:
    """The table: for each measure, ours, the baseline and their ratio (``*`` when over the target)."""
    cell = "{:>9} {:>9} {:>7}"
    lines = [
        f"{'':<50}| {'submit N, then gather':^27} | {'one call + result':^27} |",
        f"{'mode':<26}{'baseline':<24}| {cell.format('ours', 'base', 'ratio')} | {cell.format('ours', 'base', 'ratio')} | target",
    ]
    lines.append("-" * len(lines[1]))
    for row, medians in results:
        cells = []
        for measure in MEASURES:
            mine, base = medians[("ours", measure)], medians.get(("baseline", measure))
            if base is None:
                cells.append(cell.format(f"{mine:.1f}", "-", "-"))
            else:
                ratio = mine / base
                cells.append(cell.format(f"{mine:.1f}", f"{base:.1f}", f"{ratio:.2f}" + ("*" if row.target and ratio > row.target else " ")))
        target = f"<= {row.target}x" if row.target else ""
        lines.append(f"{row.label:<26}{row.baseline_name:<24}| {cells[0]} | {cells[1]} | {target}".rstrip())
    return "\n".join(lines)


def main() -> None:
    """Measure every row (starting and stopping Ray around the ray row) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (default 2000)")
    parser.add_argument("--repeat", type=int, default=5, help="measurements per figure; the median is shown (default 5)")
    modes = list(dict.fromkeys(row.mode for row in ROWS))
    parser.add_argument("--modes", nargs="+", default=modes, choices=modes)
    args = parser.parse_args()

    results = []
    for row in ROWS:
        if row.mode in args.modes:
            print(f"measuring {row.label} ...", flush=True)
            results.append((row, measure_row(row, args.calls, args.repeat)))
    print(f"\nmicroseconds per call, median of {args.repeat} runs of {args.calls} calls; "
          "ratio = ours / baseline, * = over the target\n")
    print(format_table(results))


if __name__ == "__main__":
    main()
