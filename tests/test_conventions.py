"""The notebook conventions of the course (docs/architecture.md, COURSE.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
from notebook_runner import ROOT, notebooks

NAME = re.compile(r"^(\d\d|A\d)_[a-z0-9_]+\.ipynb$")
REQUIRED_PARAMETERS = {"FAST", "SEED", "MODEL"}


def test_student_and_solution_notebooks_pair_up() -> None:
    students = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    solutions = {p.name for p in (ROOT / "solutions").glob("*.ipynb")}
    assert students == solutions
    assert "00_welcome.ipynb" in solutions


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_conventions(path: Path) -> None:
    assert NAME.match(path.name), f"{path.name}: name it NN_topic.ipynb (or A1_topic.ipynb)"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec"
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", []), (
        f"{path.name}: the first cell must be a code cell tagged 'parameters'")
    assigned = {t.id for node in ast.parse(first.source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    lacking = REQUIRED_PARAMETERS - assigned
    assert not lacking, f"{path.name}: the parameters cell lacks {lacking}"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name}, cell {i}: stray outputs; strip them (labkit course build does)")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "You will learn" in text, f"{path.name}: add a 'You will learn' list"
