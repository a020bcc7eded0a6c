"""The course's notebooks: build the student versions from the solutions, and run them all
(`labkit course build|run`, labkit.commands.course).

    build(root)                      solutions/NN_*.ipynb -> {notebooks/NN_*.ipynb: text}
    drift(root, built)               what in notebooks/ differs from a fresh build
    run_notebooks(paths, out, ...)   execute headless (fast mode, or full for the book), each with a
                                     time limit; optionally rendered to HTML beside the notebook

Building replaces every solution region by a placeholder that keeps the notebook runnable:

    def missing_share(frame):                 def missing_share(frame):
        # BEGIN SOLUTION                  ->      # YOUR CODE HERE
        return frame.isna().mean()                raise NotImplementedError("exercise 00.warmup: ...")
        # END SOLUTION

Outside a function the placeholder is `...  # YOUR CODE HERE`; `# STUDENT: code` lines inside a
region become the student's version instead (e.g. `# STUDENT: threshold = None`). Markdown cells use
`<!-- BEGIN SOLUTION -->` / `<!-- END SOLUTION -->`; a cell tagged "solution" is replaced whole.
Outputs are stripped; everything else is copied as it is, and the result is byte-identical on
every rebuild. docs/teaching.md has the full story.
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from labkit.grading import bank
from labkit.grading.execute import Execution, execute_notebook
from labkit.grading.extract import LESSON_IN_NAME, cell_source

BEGIN_CODE = re.compile(r"^(?P<indent>[ \t]*)#+\s*BEGIN SOLUTION\s*$")
END_CODE = re.compile(r"^[ \t]*#+\s*END SOLUTION\s*$")
# any other mention of a marker is a typo that would leak a solution: the build refuses it
STRAY_MARKER = re.compile(r"(BEGIN|END) SOLUTION")
STUDENT_LINE = re.compile(r"^(?P<indent>[ \t]*)#\s*STUDENT:[ ]?(?P<code>.*)$")
BEGIN_MARKDOWN = re.compile(r"^\s*<!--\s*BEGIN SOLUTION\s*-->\s*$")
END_MARKDOWN = re.compile(r"^\s*<!--\s*END SOLUTION\s*-->\s*$")
SOLUTION_TAG = "solution"
MARKDOWN_PLACEHOLDER = "_Write your answer here._\n"
# Metadata that records a run, not the lesson: never copied into the student version.
RUN_METADATA = ("execution", "papermill", "ExecuteTime")


class BuildError(ValueError):
    """A solution notebook whose markers do not pair up."""


def _enclosing_function(source: str, lines: list[str], line_number: int, indent: str) -> str | None:
    """The name of the innermost function whose body holds line `line_number` (1-based)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # %magics: fall back on indentation
        for line in reversed(lines[: line_number - 1]):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                if len(line) - len(line.lstrip()) < len(indent):
                    match = re.match(r"\s*(?:async\s+)?def\s+(\w+)", line)
                    return match.group(1) if match else None
        return None
    functions = [node for node in ast.walk(tree)
                 if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                 and node.lineno < line_number <= (node.end_lineno or 0)
                 and node.col_offset < len(indent.expandtabs())]
    return max(functions, key=lambda node: node.lineno).name if functions else None


def _code_placeholder(indent: str, function: str | None, exercise_ids: dict[str, str]) -> list[str]:
    if function is None:
        return [f"{indent}...  # YOUR CODE HERE\n"]
    label = f"exercise {exercise_ids[function]}" if function in exercise_ids else f"`{function}`"
    return [f"{indent}# YOUR CODE HERE\n",
            f'{indent}raise NotImplementedError("{label}: not attempted yet")\n']


def _replace_regions(lines: list[str], where: str, *, markdown: bool,
                     placeholder: Callable[[int, str, list[str]], list[str]]) -> list[str]:
    """Lines with every BEGIN/END region replaced by `placeholder(begin_line, indent, region)`."""
    begin, end = (BEGIN_MARKDOWN, END_MARKDOWN) if markdown else (BEGIN_CODE, END_CODE)
    for number, line in enumerate(lines, start=1):
        if STRAY_MARKER.search(line) and not (begin.match(line.rstrip("\n"))
                                              or end.match(line.rstrip("\n"))):
            raise BuildError(f"{where}, line {number}: write the marker alone on its line, "
                             f"as {'<!-- BEGIN SOLUTION -->' if markdown else '# BEGIN SOLUTION'}")
    out: list[str] = []
    region: list[str] | None = None
    start, indent = 0, ""
    for number, line in enumerate(lines, start=1):
        if begin.match(line.rstrip("\n")):
            if region is not None:
                raise BuildError(f"{where}, line {number}: BEGIN SOLUTION inside the region "
                                 f"opened on line {start}; close it with END SOLUTION first")
            region, start, indent = [], number, line[: len(line) - len(line.lstrip())]
        elif end.match(line.rstrip("\n")):
            if region is None:
                raise BuildError(f"{where}, line {number}: END SOLUTION without BEGIN SOLUTION")
            out.extend(placeholder(start, indent, region))
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise BuildError(f"{where}, line {start}: BEGIN SOLUTION is never closed by END SOLUTION")
    return out


def _student_source(cell: dict[str, Any], where: str, exercise_ids: dict[str, str]) -> str:
    """The student's version of one cell's source."""
    source = cell_source(cell)
    lines = source.splitlines(keepends=True)
    markdown = cell.get("cell_type") == "markdown"
    if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
        return MARKDOWN_PLACEHOLDER if markdown else "# YOUR CODE HERE\n"

    def placeholder(begin: int, indent: str, region: list[str]) -> list[str]:
        if markdown:
            return [MARKDOWN_PLACEHOLDER]
        student = [m for line in region if (m := STUDENT_LINE.match(line.rstrip("\n")))]
        if student:
            return [m.group("indent") + m.group("code") + "\n" for m in student]
        function = _enclosing_function(source, lines, begin, indent)
        return _code_placeholder(indent, function, exercise_ids)

    out = "".join(_replace_regions(lines, where, markdown=markdown, placeholder=placeholder))
    return out if source.endswith("\n") or not out.endswith("\n") else out[:-1]


def _set_source(cell: dict[str, Any], text: str) -> None:
    """Store `text` the way the cell stored its source (one string, or a list of lines)."""
    cell["source"] = text if isinstance(cell.get("source"), str) else text.splitlines(keepends=True)


def student_notebook(notebook: dict[str, Any], name: str) -> dict[str, Any]:
    """The student version of a solution notebook (`name` is its file name, for the lesson and
    for error messages). The input is not changed."""
    match = LESSON_IN_NAME.search(name)
    lesson = match.group(1) if match else None
    exercise_ids = {e.function: e.id for e in bank.exercises(lesson)} if lesson else {}
    student = json.loads(json.dumps(notebook))  # a deep copy
    student.get("metadata", {}).pop("papermill", None)
    for index, cell in enumerate(student.get("cells", [])):
        where = f"solutions/{name}, cell {index}"
        new_source = _student_source(cell, where, exercise_ids)
        if new_source != cell_source(cell):
            _set_source(cell, new_source)
        metadata = cell.get("metadata", {})
        for key in RUN_METADATA:
            metadata.pop(key, None)
        if SOLUTION_TAG in metadata.get("tags", []):
            metadata["tags"] = [t for t in metadata["tags"] if t != SOLUTION_TAG]
            if not metadata["tags"]:
                del metadata["tags"]
        if cell.get("cell_type") == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return student


def dumps(notebook: dict[str, Any]) -> str:
    """Notebook JSON as nbformat writes it (sorted keys, indent 1): stable bytes for stable input."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def build(root: Path) -> dict[Path, str]:
    """notebooks/NAME -> its text, for every solutions/*.ipynb under `root`."""
    solutions = root / "solutions"
    if not solutions.is_dir():
        raise BuildError(f"no solutions/ folder in {root}: run from the kit's root or pass --root")
    built = {}
    for source in sorted(solutions.glob("*.ipynb")):
        try:
            notebook = json.loads(source.read_text(encoding="utf-8"))
        except ValueError as err:
            raise BuildError(f"{source}: not valid notebook JSON ({err})") from None
        built[root / "notebooks" / source.name] = dumps(student_notebook(notebook, source.name))
    return built


def drift(root: Path, built: dict[Path, str]) -> list[str]:
    """What in notebooks/ differs from a fresh build: changed, missing, or without a source."""
    problems = []
    for target, text in built.items():
        if not target.exists():
            problems.append(f"notebooks/{target.name} is missing")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"notebooks/{target.name} differs from solutions/{target.name}")
    for extra in sorted((root / "notebooks").glob("*.ipynb")):
        if extra not in built:
            problems.append(f"notebooks/{extra.name} has no solutions/{extra.name} to come from")
    return problems


def write_built(built: dict[Path, str]) -> int:
    """Write the built student notebooks whose text changed; returns how many were written."""
    changed = 0
    for target, text in built.items():
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            changed += 1
    return changed


def _earlier_success(source: Path, output: Path, fast: bool) -> Execution | None:
    """The result of an earlier successful run in the same mode (FAST) that is newer than the
    notebook (for resume)."""
    if not output.exists() or output.stat().st_mtime < source.stat().st_mtime:
        return None
    try:
        papermill = json.loads(output.read_text(encoding="utf-8"))["metadata"]["papermill"]
    except (OSError, ValueError, KeyError):
        return None
    if papermill.get("exception") or papermill.get("duration") is None:
        return None
    if papermill.get("parameters", {}).get("FAST") != fast:  # a fast run is not the book's
        return None
    return Execution("ok", float(papermill["duration"]), "earlier run")


def render_html(executed: Path) -> Path:
    """The executed notebook as a standalone HTML page beside it (outputs and figures included), to
    read a correct run without Jupyter."""
    from nbconvert import HTMLExporter  # only the book needs it

    body, _ = HTMLExporter().from_filename(str(executed))
    page = executed.with_suffix(".html")
    page.write_text(body, encoding="utf-8")
    return page


def run_notebooks(paths: list[Path], out: Path, *, timeout: float, resume: bool = False,
                  fast: bool = True, html: bool = False) -> list[tuple[Path, Execution]]:
    """Execute each notebook headless (FAST=fast) into out/<its folder>/<its name>, each in its own
    folder with a time limit; with resume, keep earlier successful runs that are newer than their
    notebook; with html, render each successful run to HTML beside it (the book: `make book`)."""
    results: list[tuple[Path, Execution]] = []
    with tempfile.TemporaryDirectory(prefix="labkit-course-", ignore_cleanup_errors=True) as scratch:
        for path in tqdm(paths, desc="course", unit="notebook"):
            output = out / path.resolve().parent.name / path.name
            output.parent.mkdir(parents=True, exist_ok=True)
            done = _earlier_success(path, output, fast) if resume else None
            result = done or execute_notebook(path, output, cwd=path.resolve().parent, scratch=Path(scratch),
                                              parameters={"FAST": fast}, timeout=timeout)
            if html and result.status == "ok":
                render_html(output)
            results.append((path, result))
    return results
