"""Every Python example in the README and the guides (docs/workers.md, pools.md, futures.md, errors.md, modes.md, compat.md,
observability.md) runs as written."""

from __future__ import annotations

import re
import sys
import types

import pytest
from conftest import REPO

from concurry_ray.modes import MODES

GUIDES = [
    "README.md",
    "docs/workers.md",
    "docs/pools.md",
    "docs/futures.md",
    "docs/errors.md",
    "docs/modes.md",
    "docs/compat.md",
    "docs/observability.md",
]


def examples() -> list:
    params = []
    for guide in GUIDES:
        text = (REPO / guide).read_text()
        for index, code in enumerate(re.findall(r"```python\n(.*?)```", text, flags=re.S), start=1):
            params.append(pytest.param(guide, code, id=f"{guide}-{index}"))
    return params


@pytest.fixture
def main_module(monkeypatch):
    """A fresh ``__main__`` module to run an example in, as if it were a script; registered modes are restored after."""
    module = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", module)
    modes = dict(MODES)
    yield module
    MODES.clear()
    MODES.update(modes)


@pytest.mark.parametrize("guide, code", examples())
def test_example_runs(guide, code, main_module, request):
    if 'mode="ray"' in code or "import ray" in code:
        request.getfixturevalue("ray_runtime")  # the session's runtime, not one started by the example
    exec(compile(code, guide, "exec"), main_module.__dict__)
