"""Every Python example in the foundation guides (docs/workers.md, futures.md, errors.md, modes.md) runs as written."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

GUIDES = ["workers.md", "futures.md", "errors.md", "modes.md"]


def examples() -> list:
    params = []
    for guide in GUIDES:
        path = REPO / "docs" / guide
        if not path.exists():
            continue
        for index, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S), start=1):
            params.append(pytest.param(guide, code, id=f"{guide}-{index}"))
    return params


@pytest.mark.parametrize("guide, code", examples())
def test_example_runs(guide, code, request):
    if 'mode="ray"' in code or "import ray" in code:
        request.getfixturevalue("ray_runtime")  # the session's runtime, not one started by the example
    exec(compile(code, f"docs/{guide}", "exec"), {"__name__": "__main__"})
