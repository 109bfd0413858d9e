"""benchmarks/scale.py runs clean: short sections of a quick run exit 0 and print the table with their rows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "scale.py"
HEADER = ["section", "row", "ours", "baseline", "ratio", "target"]
RUNS = {
    # section: (rows it must print, seconds it may take; Ray starts a runtime and pools of 2 and 8 actors)
    "stats": (["get_pool_stats(), pool of 2", "get_pool_stats(), pool of 8", "after a call on every worker, pool of 8"], 300),
    "elastic-thread": (["burst start -> 8 workers", "burst end -> 1 worker", "worker-seconds vs fixed pool of 8"], 60),
}


@pytest.mark.parametrize("section", ["stats", "elastic-thread"], ids=["ray-stats", "thread-elastic"])
@pytest.mark.timeout(330)
def test_quick_scale_section_prints_the_table(section):
    rows, seconds = RUNS[section]
    command = [sys.executable, str(SCRIPT), "--quick", "--sections", section]
    run = subprocess.run(command, capture_output=True, text=True, timeout=seconds)
    assert run.returncode == 0, f"exit status {run.returncode}\n{run.stdout}\n{run.stderr}"
    lines = run.stdout.splitlines()
    header = next((line for line in lines if line.startswith("section")), None)
    assert header is not None and header.split() == HEADER, run.stdout
    table = run.stdout[run.stdout.index(header):]
    for row in rows:
        assert row in table, f"row {row!r} missing:\n{run.stdout}"
