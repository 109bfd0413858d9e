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
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Optional

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


@dataclass
class Subject:
    """One thing to measure: how to submit a call, wait for many, and wait for one."""

    submit: Callable[[int], Any]
    gather: Callable[[list], list]
    result: Callable[[Any], Any]


@dataclass
class Row:
    """One line of the table: a mode, its baseline (if any) and the target ratio."""

    mode: str
    ours: Callable[[], ContextManager[Subject]]
    baseline_name: str = "-"
    baseline: Optional[Callable[[], ContextManager[Subject]]] = None
    target: Optional[float] = None
    runtime: Callable[[], ContextManager] = nullcontext


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
def ray_runtime() -> Iterator[None]:
    """A local Ray runtime for the ray row only, so that it does not load the machine during the others."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def raw_actor() -> Iterator[Subject]:
    """A hand-written Ray actor; waits with ``ray.get``."""
    import ray

    actor = ray.remote(**RAY_ACTOR_OPTIONS)(RawEcho).remote()
    try:
        yield Subject(actor.echo.remote, ray.get, ray.get)
    finally:
        ray.kill(actor)


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
    Row("ray", lambda: ours("ray", actor_options=RAY_ACTOR_OPTIONS), "raw Ray actor", raw_actor, 1.2, ray_runtime),
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


def measure_row(row: Row, calls: int, repeat: int) -> dict:
    """Medians of each measure for ours and the baseline, taking turns in every repeat."""
    samples: dict = {(side, m): [] for side in ("ours", "baseline") for m in MEASURES}
    with ExitStack() as stack:
        stack.enter_context(row.runtime())
        subjects = {"ours": stack.enter_context(row.ours())}
        if row.baseline is not None:
            subjects["baseline"] = stack.enter_context(row.baseline())
        for subject in subjects.values():
            submit_gather_us(subject, WARMUP_CALLS)
        for turn in range(repeat):
            order = list(subjects.items())[:: 1 if turn % 2 == 0 else -1]
            for measure in MEASURES:
                for side, subject in order:
                    time.sleep(SETTLE_SECONDS)
                    samples[side, measure].append(measure(subject, calls))
    return {key: statistics.median(values) for key, values in samples.items() if values}


def format_table(results: list[tuple[Row, dict]]) -> str:
    """The table: for each measure, ours, the baseline and their ratio (``*`` when over the target)."""
    cell = "{:>9} {:>9} {:>7}"
    lines = [
        f"{'':<32}| {'submit N, then gather':^27} | {'one call + result':^27} |",
        f"{'mode':<8}{'baseline':<24}| {cell.format('ours', 'base', 'ratio')} | {cell.format('ours', 'base', 'ratio')} | target",
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
                cells.append(cell.format(f"{mine:.1f}", f"{base:.1f}", f"{ratio:.2f}" + ("*" if ratio > row.target else " ")))
        target = f"<= {row.target}x" if row.target else ""
        lines.append(f"{row.mode:<8}{row.baseline_name:<24}| {cells[0]} | {cells[1]} | {target}".rstrip())
    return "\n".join(lines)


def main() -> None:
    """Measure every row (starting and stopping Ray around the ray row) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (default 2000)")
    parser.add_argument("--repeat", type=int, default=5, help="measurements per figure; the median is shown (default 5)")
    parser.add_argument("--modes", nargs="+", default=[r.mode for r in ROWS], choices=[r.mode for r in ROWS])
    args = parser.parse_args()

    results = []
    for row in ROWS:
        if row.mode in args.modes:
            print(f"measuring {row.mode} ...", flush=True)
            results.append((row, measure_row(row, args.calls, args.repeat)))
    print(f"\nmicroseconds per call, median of {args.repeat} runs of {args.calls} calls; "
          "ratio = ours / baseline, * = over the target\n")
    print(format_table(results))


if __name__ == "__main__":
    main()
