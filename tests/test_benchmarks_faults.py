"""benchmarks/faults.py runs clean: a quick run exits 0 and prints every row of its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "faults.py"
ROWS = [
    "kills injected",
    "calls lost",
    "kill -> failed future (WorkerCrashedError)",
    "kill -> pool back at full size",
    "calls run twice without crash retries",
    "duplicate executions per crash retry",
    "processes / actors / threads left after stop",
    "driver RSS slope over a 2,000-call soak",
    "library registries after stop",
    "named limit: most in one 1 s window / capacity",
]
SECONDS = {"process": 180, "ray": 300}  # Ray starts a runtime and its actors take a second or two each


def quick_run(mode: str) -> subprocess.CompletedProcess:
    """``faults.py --quick`` for one mode, with a short soak."""
    command = [sys.executable, str(SCRIPT), "--quick", "--modes", mode, "--soak", "2000"]
    return subprocess.run(command, capture_output=True, text=True, timeout=SECONDS[mode])


@pytest.mark.parametrize("mode", ["process", "ray"])
@pytest.mark.timeout(SECONDS["ray"] + 30)
def test_quick_fault_run_exits_clean_with_every_row(mode):
    run = quick_run(mode)
    assert run.returncode == 0, f"exit status {run.returncode}\n{run.stdout}\n{run.stderr}"
    table = run.stdout[run.stdout.index(f"{mode}: 4 workers"):]
    for row in ROWS:
        assert row in table, f"row {row!r} missing:\n{run.stdout}"
    limit_row = next(line for line in table.splitlines() if line.startswith("named limit"))
    assert ("n/a" in limit_row) == (mode == "process")
