"""Every ```python block of the repository's README.md runs, so the examples stay true.

Each block runs in its own interpreter with the binding on PYTHONPATH and VPIPE_LIBRARY
pointing at the library under test, as a reader pasting it into a file would run it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

import vpipe

BINDING_ROOT = Path(__file__).resolve().parents[1]  # bindings/python
README = BINDING_ROOT.parents[1] / "README.md"


def python_blocks(text: str) -> List[Tuple[int, str]]:
    """(line number, code) of every fenced ```python block."""
    blocks = []
    for m in re.finditer(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.S | re.M):
        blocks.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2, f"expected the README's planning and training examples, found {len(BLOCKS)} python blocks"


@pytest.mark.parametrize("line,code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_block_runs(line: int, code: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VPIPE_LIBRARY")}
    env["PYTHONPATH"] = str(BINDING_ROOT)
    env["VPIPE_LIBRARY"] = os.path.abspath(vpipe.library_path())
    script = tmp_path / f"readme_{line}.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"README.md:{line}: the example failed (exit {result.returncode}):\n{result.stderr}"
    assert result.stdout.strip(), f"README.md:{line}: the example printed nothing"
