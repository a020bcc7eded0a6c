"""labkit course: student notebooks built from solutions/, the drift check, running notebooks."""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from notebook_runner import ROOT

from labkit.commands import course
from labkit.course import BuildError, student_notebook


def code(source: str, **metadata: Any) -> dict[str, Any]:
    return {"cell_type": "code", "execution_count": None, "id": f"c{zlib.crc32(source.encode())}",
            "metadata": metadata, "outputs": [], "source": source.splitlines(keepends=True)}


def markdown(source: str, **metadata: Any) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": f"m{zlib.crc32(source.encode())}", "metadata": metadata,
            "source": source.splitlines(keepends=True)}


def notebook(*cells: dict[str, Any]) -> dict[str, Any]:
    parameters = code('FAST = False\nSEED = 0\nMODEL = "pocket"', tags=["parameters"])
    return {"cells": [parameters, *cells], "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}}}


def source(cell: dict[str, Any]) -> str:
    return "".join(cell["source"])


SOLVED_FUNCTION = '''def missing_share(frame):
    """Fraction missing per column."""
    # BEGIN SOLUTION
    shares = frame.isna().mean()
    return {str(k): float(v) for k, v in shares.items()}
    # END SOLUTION
'''


def test_function_body_becomes_a_runnable_not_attempted_placeholder() -> None:
    student = student_notebook(notebook(code(SOLVED_FUNCTION)), "00_welcome.ipynb")
    text = source(student["cells"][1])
    assert "isna" not in text and "BEGIN SOLUTION" not in text
    assert '"""Fraction missing per column."""' in text
    assert 'raise NotImplementedError("exercise 00.warmup: not attempted yet")' in text
    namespace: dict[str, Any] = {}
    exec(text, namespace)  # the cell still runs: it defines the function
    with pytest.raises(NotImplementedError, match="00.warmup"):
        namespace["missing_share"](None)


def test_unregistered_function_is_named_and_top_level_regions_become_ellipsis() -> None:
    cells = [
        code("def helper(x):\n    # BEGIN SOLUTION\n    return x + 1\n    # END SOLUTION\n"),
        code("# BEGIN SOLUTION\nthreshold = 0.7\n# END SOLUTION\nprint('done')"),
        code("# BEGIN SOLUTION\nthreshold = 0.7\n# STUDENT: threshold = None  # choose one\n"
             "# END SOLUTION\n"),
    ]
    student = student_notebook(notebook(*cells), "03_noisy.ipynb")
    helper, top, with_student = (source(c) for c in student["cells"][1:])
    assert 'raise NotImplementedError("`helper`: not attempted yet")' in helper
    assert top == "...  # YOUR CODE HERE\nprint('done')"  # no trailing newline added
    assert with_student == "threshold = None  # choose one\n"
    nbgrader_style = code("### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n")
    assert source(student_notebook(notebook(nbgrader_style), "03_noisy.ipynb")["cells"][1]) == \
        "...  # YOUR CODE HERE\n"
    for text in (helper, top, with_student):
        compile(text, "<cell>", "exec")


def test_markdown_regions_and_solution_tagged_cells() -> None:
    cells = [
        markdown("Why?\n<!-- BEGIN SOLUTION -->\nBecause of the memorization effect.\n"
                 "<!-- END SOLUTION -->\nNext."),
        code("answer = 42\n", tags=["solution", "keep-me"]),
    ]
    student = student_notebook(notebook(*cells), "01_x.ipynb")
    text, tagged = student["cells"][1], student["cells"][2]
    assert source(text) == "Why?\n_Write your answer here._\nNext."
    assert source(tagged) == "# YOUR CODE HERE\n"
    assert tagged["metadata"]["tags"] == ["keep-me"]


def test_everything_else_is_copied_and_outputs_are_stripped() -> None:
    ran = code("print(1)\n", execution={"iopub.status.busy": "2024"}, tags=["x"])
    ran["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["1\n"]}]
    ran["execution_count"] = 3
    solution = notebook(markdown("# Title\nYou will learn"), ran, code(SOLVED_FUNCTION))
    solution["metadata"]["papermill"] = {"duration": 1.0}
    before = json.dumps(solution)
    student = student_notebook(solution, "00_welcome.ipynb")
    assert json.dumps(solution) == before  # the input is left alone
    assert student["cells"][:2] == solution["cells"][:2]
    assert student["cells"][2] == {**solution["cells"][2], "outputs": [], "execution_count": None,
                                   "metadata": {"tags": ["x"]}}
    assert student["cells"][3]["id"] == solution["cells"][3]["id"]
    assert "papermill" not in student["metadata"]
    assert student["metadata"]["kernelspec"] == solution["metadata"]["kernelspec"]


@pytest.mark.parametrize("text, problem", [
    ("# BEGIN SOLUTION\nx = 1\n", "line 1: BEGIN SOLUTION is never closed"),
    ("x = 1\n# END SOLUTION\n", "line 2: END SOLUTION without BEGIN"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", "line 2: BEGIN SOLUTION inside"),
    ("x = 1\n# BEGIN SOLUTION (part 1)\ny = 2\n# END SOLUTION\n", "line 2: write the marker alone"),
])
def test_unpaired_markers_name_the_notebook_cell_and_line(text: str, problem: str) -> None:
    with pytest.raises(BuildError, match=f"solutions/02_x.ipynb, cell 2, {problem}"):
        student_notebook(notebook(code("pass\n"), code(text)), "02_x.ipynb")


def test_build_is_deterministic_and_check_names_every_drift(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "solutions").mkdir()
    for name in ("00_welcome.ipynb", "01_zero_shot.ipynb"):
        (tmp_path / "solutions" / name).write_text(json.dumps(notebook(code(SOLVED_FUNCTION))))
    root = ["--root", str(tmp_path)]
    assert course.main(["build", "--check", *root]) == 1  # nothing built yet
    assert course.main(["build", *root]) == 0
    built = {p.name: p.read_bytes() for p in (tmp_path / "notebooks").glob("*.ipynb")}
    assert set(built) == {"00_welcome.ipynb", "01_zero_shot.ipynb"}
    assert course.main(["build", *root]) == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "notebooks").glob("*.ipynb")} == built
    assert course.main(["build", "--check", *root]) == 0

    capsys.readouterr()
    (tmp_path / "notebooks" / "00_welcome.ipynb").write_text("{}")
    (tmp_path / "notebooks" / "01_zero_shot.ipynb").unlink()
    (tmp_path / "notebooks" / "02_orphan.ipynb").write_text("{}")
    assert course.main(["build", "--check", *root]) == 1
    err = capsys.readouterr().err
    assert "notebooks/00_welcome.ipynb differs from solutions/00_welcome.ipynb" in err
    assert "notebooks/01_zero_shot.ipynb is missing" in err
    assert "notebooks/02_orphan.ipynb has no solutions/02_orphan.ipynb" in err


def test_repository_notebooks_are_in_sync_with_solutions() -> None:
    """notebooks/ is generated: edit solutions/ and run `labkit course build`."""
    assert course.main(["build", "--check", "--root", str(ROOT)]) == 0


@pytest.mark.slow
def test_run_executes_with_the_venv_kernel_and_fails_on_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "00_good.ipynb"
    good.write_text(json.dumps(notebook(code(
        "import json, sys\n"
        "json.dump({'python': sys.executable, 'fast': FAST}, open('seen.json', 'w'))\n"))))
    bad = tmp_path / "01_bad.ipynb"
    bad.write_text(json.dumps(notebook(code("x = 1\n"), code("raise ValueError('on purpose')\n"))))
    out = tmp_path / "runs"
    assert course.main(["run", str(good), str(bad), "--out", str(out), "--timeout", "120"]) == 1
    printed = capsys.readouterr().out
    rows = {cells[0]: cells[1] for line in printed.splitlines()
            if len(cells := [c.strip() for c in line.split("|")]) == 3}
    assert rows[str(good)] == "ok" and rows[str(bad)] == "error"
    assert "cell 2: ValueError: on purpose" in printed  # counted in the notebook's own cells
    seen = json.loads((tmp_path / "seen.json").read_text())  # ran in the notebook's folder
    assert seen == {"python": sys.executable, "fast": True}
    executed = out / tmp_path.name / good.name
    assert executed.exists()

    stamp = executed.stat().st_mtime_ns
    assert course.main(["run", str(good), "--out", str(out), "--resume"]) == 0
    assert executed.stat().st_mtime_ns == stamp  # up to date: not run again


def test_book_runs_the_full_version_and_renders_html(tmp_path: Path) -> None:
    lesson = tmp_path / "00_lesson.ipynb"
    lesson.write_text(json.dumps(notebook(code("print('fast' if FAST else 'the full run')\n"))))
    out = tmp_path / "book"
    assert course.main(["run", str(lesson), "--full", "--html", "--out", str(out), "--timeout", "120"]) == 0
    page = (out / tmp_path.name / "00_lesson.html").read_text(encoding="utf-8")
    assert "the full run" in page and "<html" in page
    # resuming in fast mode does not keep the full run as if it were a fast one
    assert course.main(["run", str(lesson), "--resume", "--out", str(out), "--timeout", "120"]) == 0
    executed = json.loads((out / tmp_path.name / "00_lesson.ipynb").read_text(encoding="utf-8"))
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert printed.strip() == "fast"
