"""Every Python example in docs/limits.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "limits.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_runs(index, request):
    code = EXAMPLES[index]
    if "import ray" in code:
        request.getfixturevalue("ray_runtime")
    exec(compile(code, f"{DOC.name} example {index + 1}", "exec"), {"__name__": "__main__"})
