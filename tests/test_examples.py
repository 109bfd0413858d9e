"""Every script in examples/ runs to completion as a user would run it, and prints what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

EXAMPLES = REPO / "examples"
TIMEOUT = 120

# Lines (or parts of lines) an example must print; examples not listed only need to exit with 0.
EXPECTED_OUTPUT = {
    "quickstart.py": [
        "thread worker, running totals: [10, 30, 60, 100]",
        "5 async calls of 0.2 s each: ['A', 'B', 'C', 'D', 'E']",
        "ray pool, squares: [0, 1, 4, 9, 16, 25, 36, 49]",
        "ray pool, each worker's own total: [1, 1, 1, 1, 2, 2, 2, 2]",
        "pipeline, square(square(3)): 81",
        "caught the original exception type: ZeroDivisionError",
        "pool stats: 4 workers",
    ],
    "from_concurry.py": [
        "scores: [2, 3, 4] 3 0",
        "try_acquire successful: True {'account': 'A'}",
        "accounts: ['A:0', 'A:2', 'B:1', 'B:3']",
        "executor: [1, 2, 3] 32",
        "wrap_future: 42",
        "progress: [('x', 1), ('y', 2)]",
        "timer ok: True",
        "ray scores: [11, 12]",
    ],
}


def needs_cluster() -> set[str]:
    """Scripts that examples/README.md marks with "needs a cluster"."""
    readme = EXAMPLES / "README.md"
    text = readme.read_text() if readme.exists() else ""
    return {name for line in text.splitlines() if "needs a cluster" in line for name in re.findall(r"(\w+\.py)", line)}


def example_params() -> list:
    skipped = needs_cluster()
    return [
        pytest.param(path.name, marks=pytest.mark.skip(reason="needs a cluster (examples/README.md)"))
        if path.name in skipped
        else path.name
        for path in sorted(EXAMPLES.glob("*.py"))
    ]


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("name", example_params())
def test_example_runs(name):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    env.pop("RAY_ADDRESS", None)  # examples start their own local runtime
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, f"{name} exited with {result.returncode}\n{result.stdout}\n{result.stderr}"
    for expected in EXPECTED_OUTPUT.get(name, []):
        assert expected in result.stdout, f"{name} did not print {expected!r}; it printed:\n{result.stdout}"


def test_dispatch_benchmark_runs_and_prints_its_table():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "dispatch.py"), "--calls", "50", "--repeat", "1",
         "--modes", "sync", "thread", "process"],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.split()[:1] in (["thread"], ["process"])}
    assert set(rows) == {"thread", "process"}
    assert "ThreadPoolExecutor(1)" in rows["thread"] and "ProcessPoolExecutor(1)" in rows["process"]
