"""Every notebook runs in fast mode (papermill); a rerun reproduces its checked outputs (nbval)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from notebook_runner import execute, notebooks

from labkit.grading import bank


def _executed_by_the_grading_test(path: Path) -> bool:
    """Both versions of a lesson with exercises run in fast mode in test_grading's full-marks test
    (the grader's papermill run, FAST=True, must end "ok" for both): running them here again would
    double CI's longest part. A solution with checked outputs still runs here, for nbval's rerun."""
    checked = path.parent.name == "solutions" and "NBVAL_CHECK_OUTPUT" in path.read_text()
    return bool(bank.exercises(path.name[:2])) and not checked


NOTEBOOKS = [p for p in notebooks() if not _executed_by_the_grading_test(p)]


@pytest.fixture(scope="session")
def executed(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    return {}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_runs_in_fast_mode(path: Path, executed: dict[Path, Path], tmp_path_factory) -> None:
    out = execute(path, tmp_path_factory.mktemp("runs"))
    executed[path] = out


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.parent.name == "solutions"],
                         ids=lambda p: p.name)
def test_rerun_reproduces_checked_outputs(path: Path, executed: dict[Path, Path]) -> None:
    """nbval (lax) reruns the executed solution and compares the cells marked NBVAL_CHECK_OUTPUT."""
    if path not in executed:
        pytest.skip("the papermill run of this notebook failed or did not run")
    if "NBVAL_CHECK_OUTPUT" not in path.read_text():
        pytest.skip("no cell is marked NBVAL_CHECK_OUTPUT: nothing to compare (the run above executed it)")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
         "-p", "no:cacheprovider", "--rootdir", str(executed[path].parent), str(executed[path])],
        capture_output=True, text=True, cwd=executed[path].parent, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
