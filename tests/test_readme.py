"""The README's Python examples run as written, each block alone (its own imports,
a fresh namespace), the way a reader pastes one of them."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_alone(index):
    exec(compile(BLOCKS[index], f"{README}:block{index}", "exec"), {"__name__": "__readme__"})  # noqa: S102
