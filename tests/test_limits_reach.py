"""Which modes' workers a LimitSet reaches: read from the mode table, so a new mode needs only its row."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from concurry_ray import LimitSet, ResourceLimit
from concurry_ray.modes import LOCAL_HOLDER, MODES, Mode

LIMITS = [ResourceLimit("seats", 1)]


def test_where_each_holder_reaches():
    thread, process = (LimitSet(LIMITS, shared=True, mode=mode) for mode in ("thread", "process"))
    private = LimitSet(LIMITS)
    reached = {name: [mode for mode in MODES if limit_set.reaches(mode)] for name, limit_set in
               (("thread", thread), ("process", process), ("private", private))}
    assert reached == {
        "thread": ["sync", "asyncio", "thread"],
        "process": ["sync", "asyncio", "thread", "process"],
        "private": list(MODES),
    }


@pytest.mark.parametrize(
    "holder, reached_by",
    [(LOCAL_HOLDER, {"thread", "process", "private"}), ("some.module:open_its_own", {"private"})],
)
def test_a_new_mode_is_reached_through_its_row_alone(monkeypatch, holder, reached_by):
    monkeypatch.setitem(MODES, "newmode", Mode("some.module:NewBackend", holder))
    sets = {
        "thread": LimitSet(LIMITS, shared=True, mode="thread"),
        "process": LimitSet(LIMITS, shared=True, mode="process"),
        "private": LimitSet(LIMITS),
    }
    assert {name for name, limit_set in sets.items() if limit_set.reaches("newmode")} == reached_by


def test_nothing_under_limits_imports_ray():
    limits_dir = Path(__file__).resolve().parent.parent / "concurry_ray" / "limits"
    offenders = []
    for path in sorted(limits_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "ray" or name.startswith("..ray")]
    assert offenders == []
