"""Grade notebook submissions with hidden tests, outside the student's kernel (`labkit grade`,
labkit.commands.grade).

For each submission:
1. run it headless with papermill (FAST=True) in a fresh temporary folder, with a time limit;
2. take its definitions (imports, functions, classes, simple constants: extract.py) from the
   executed notebook;
3. for each exercise of its lesson, draw hidden inputs here, compute the reference outputs here,
   send the inputs to a separate worker process that calls the student's function (worker.py),
   read back plain JSON data, and compare here;
4. write REPORT.json and REPORT.md (and, for several submissions, grades.csv) into --out.

Nothing the notebook does (printing, redefining `check`, patching labkit or numpy, writing files)
reaches the grader's process: the grade depends only on the outputs of the student's functions on
inputs drawn at grading time. Isolation is by processes, not by OS permissions: for untrusted
submissions run the grader as a user that the submissions cannot harm (a container or a VM).
"""

from __future__ import annotations

import csv
import json
import pickle
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from labkit.grading import bank
from labkit.grading.execute import child_env, execute_notebook, log_tail, run_limited
from labkit.grading.exercise import Exercise
from labkit.grading.extract import definitions, lesson_of, read_notebook
from labkit.grading.worker import to_plain


@dataclass
class ExerciseResult:
    """The grade of one exercise: all hidden cases right gives all points, else none."""

    id: str
    function: str
    tier: str
    points: int
    max: int
    passed: bool
    message: str


@dataclass
class Report:
    """Everything the grader found about one submission (written as JSON)."""

    submission: str
    lesson: str | None
    seed: int
    exercises: list[ExerciseResult] = field(default_factory=list)
    total: int = 0
    max: int = 0
    execution: dict[str, Any] = field(default_factory=dict)
    runtime_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def full_marks(self) -> bool:
        return self.max > 0 and self.total == self.max and self.execution.get("status") == "ok"


def _plain(value: Any) -> Any:
    """The reference's output in exactly the form a student's output arrives in (JSON round trip)."""
    return json.loads(json.dumps(to_plain(value)))


def _run_worker(job: dict[str, Any], folder: Path, scratch: Path,
                time_limit: float) -> tuple[dict[str, Any] | None, str]:
    """Run the student's function in a worker process; its JSON result, or None and why not."""
    folder.mkdir(parents=True)
    (folder / "cwd").mkdir()
    (folder / "job.pickle").write_bytes(pickle.dumps(job))
    result_path, log = folder / "result.json", folder / "worker.log"
    code = run_limited([sys.executable, "-m", "labkit.grading.worker", str(folder / "job.pickle"),
                        str(result_path)], cwd=folder / "cwd", env=child_env(scratch),
                       timeout=time_limit, log=log)
    if code is None:
        return None, f"timed out: the hidden tests took more than {time_limit:g} s"
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"the test process ended without a result (exit code {code}): {log_tail(log)}"
    if not isinstance(result, dict):
        return None, "the test process wrote a malformed result"
    return result, ""


def hidden_test(exercise: Exercise, chunks: list[str], *, seed: int, scratch: Path,
                time_limit: float, errors: list[str]) -> ExerciseResult:
    """Grade one exercise on hidden inputs drawn now; load errors of the definitions go to `errors`."""

    def result(passed: bool, message: str) -> ExerciseResult:
        return ExerciseResult(exercise.id, exercise.function, exercise.tier,
                              exercise.points if passed else 0, exercise.points, passed, message)

    # One stream per exercise, so adding an exercise does not change another's inputs.
    rng = np.random.default_rng([seed, zlib.crc32(exercise.id.encode())])
    cases = list(exercise.hidden(rng))
    expected = [_plain(c.call(exercise.reference)) for c in cases]
    job = {"chunks": chunks, "function": exercise.function,
           "cases": [(c.args, c.kwargs) for c in cases]}
    outcome, why = _run_worker(job, scratch / f"job-{exercise.id}", scratch, time_limit)
    if outcome is None:
        return result(False, why)
    errors.extend(e for e in outcome.get("load_errors", []) if isinstance(e, str) and e not in errors)
    status, n = outcome.get("status"), len(cases)
    if status == "missing":
        return result(False, f"no function `{exercise.function}` found (the grader uses your "
                             "imports, functions, classes and simple constants only)")
    if status == "not_attempted":
        return result(False, "not attempted yet (raises NotImplementedError)")
    if status == "error":
        index = outcome.get("case")
        where = (f"hidden case {index + 1} of {n}: {cases[index].describe(exercise.function)}"
                 if type(index) is int and 0 <= index < n else f"`{exercise.function}`")
        return result(False, f"{where} raised {outcome.get('error')}")
    outputs = outcome.get("outputs")
    if status != "ok" or not isinstance(outputs, list) or len(outputs) != n:
        return result(False, "the test process wrote a malformed result")
    for index, (got, want) in enumerate(zip(outputs, expected, strict=True)):
        difference = exercise.compare(got, want)
        if difference is not None:
            call = cases[index].describe(exercise.function)
            return result(False, f"hidden case {index + 1} of {n}: {call}: {difference}")
    return result(True, f"passed all {n} hidden cases")


def grade_submission(path: Path, *, seed: int, timeout: float, lesson: str | None = None,
                     exercise_timeout: float | None = None,
                     keep_executed: Path | None = None) -> Report:
    """Grade one notebook. Never raises for anything the submission does: problems go to `errors`."""
    start = time.perf_counter()
    report = Report(submission=str(path), lesson=lesson, seed=seed)
    try:
        notebook = read_notebook(path)
    except ValueError as err:
        report.errors.append(str(err))
        report.execution = {"status": "error", "seconds": 0.0, "error": "not run"}
        return report
    report.lesson = lesson or lesson_of(path, notebook)
    if report.lesson is None:
        report.errors.append("cannot tell the lesson: name the file NN_*.ipynb or pass --lesson NN")
    todo = bank.exercises(report.lesson) if report.lesson else []
    if report.lesson and not todo:
        report.errors.append(f"no exercises are registered for lesson {report.lesson}")
    report.max = sum(e.points for e in todo)
    with tempfile.TemporaryDirectory(prefix="labkit-grade-", ignore_cleanup_errors=True) as tmp:
        run, scratch = Path(tmp, "run"), Path(tmp, "grader")
        run.mkdir()
        scratch.mkdir()
        shutil.copyfile(path, run / "submission.ipynb")
        executed = scratch / "executed.ipynb"
        execution = execute_notebook(run / "submission.ipynb", executed, cwd=run, scratch=scratch,
                                     parameters={"FAST": True}, timeout=timeout)
        report.execution = {"status": execution.status, "seconds": round(execution.seconds, 2),
                            "error": execution.error}
        if execution.status != "ok":
            report.errors.append(f"notebook run: {execution.status}: {execution.error}")
        try:  # grade what ran; fall back on the submission when papermill wrote nothing
            source = read_notebook(executed)
        except ValueError:
            source = notebook
        if keep_executed is not None and executed.exists():
            shutil.copyfile(executed, keep_executed)
        try:
            chunks, notes = definitions(source)
        except Exception as err:  # noqa: BLE001 - e.g. RecursionError on absurdly nested code
            chunks, notes = [], [f"could not read the notebook's code: {type(err).__name__}: {err}"]
        report.errors.extend(notes)
        for exercise in todo:
            limit = exercise_timeout or exercise.time_limit_s
            try:
                outcome = hidden_test(exercise, chunks, seed=seed, scratch=scratch,
                                      time_limit=limit, errors=report.errors)
            except Exception as err:  # noqa: BLE001 - a bug in an exercise must not stop the others
                outcome = ExerciseResult(exercise.id, exercise.function, exercise.tier, 0,
                                         exercise.points, False, "grader error, see errors")
                report.errors.append(f"grader error in {exercise.id}: {type(err).__name__}: {err}")
            report.exercises.append(outcome)
    report.total = sum(e.points for e in report.exercises)
    report.runtime_s = round(time.perf_counter() - start, 2)
    return report


def markdown(report: Report) -> str:
    """A summary a student can read."""
    lines = [f"# Grade: {Path(report.submission).name}", "",
             f"**Total: {report.total} / {report.max}** (lesson {report.lesson}, seed {report.seed})",
             "", "| exercise | tier | points | result |", "|---|---|---|---|"]
    lines += [f"| {e.id} `{e.function}` | {e.tier} | {e.points} / {e.max} | "
              f"{e.message.replace('|', '&#124;')} |" for e in report.exercises]
    run = report.execution
    lines += ["", f"Notebook run: {run.get('status')} in {run.get('seconds')} s. "
                  f"Grading took {report.runtime_s} s."]
    if report.errors:
        lines += ["", "## Errors", "", *(f"- {e}" for e in report.errors)]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[tuple[str, Report]], path: Path) -> None:
    """One line per submission, one column per exercise seen in any of them."""
    ids = list(dict.fromkeys(e.id for _, r in rows for e in r.exercises))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", "lesson", "total", "max", "execution", *ids, "errors"])
        for name, report in rows:
            points = {e.id: e.points for e in report.exercises}
            writer.writerow([name, report.lesson, report.total, report.max,
                             report.execution.get("status"), *(points.get(i, "") for i in ids),
                             " | ".join(report.errors)])


def load_report(path: Path, newer_than: Path) -> Report | None:
    """A report from an earlier run that is newer than the notebook (for --resume), else None."""
    if not path.exists() or path.stat().st_mtime < newer_than.stat().st_mtime:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["exercises"] = [ExerciseResult(**e) for e in data["exercises"]]
        return Report(**data)
    except (OSError, ValueError, TypeError, KeyError):  # unreadable: grade again
        return None


def collect(paths: list[Path]) -> list[tuple[str, Path]]:
    """(report name, notebook) for every submission; a folder contributes every notebook below it."""
    found: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            for notebook in sorted(path.rglob("*.ipynb")):
                if ".ipynb_checkpoints" not in notebook.parts:
                    relative = notebook.relative_to(path).with_suffix("")
                    found.append(("__".join(relative.parts), notebook))
        elif path.suffix == ".ipynb" and path.is_file():
            found.append((path.stem, path))
        else:
            raise FileNotFoundError(f"{path}: not a notebook (.ipynb) or a folder of notebooks")
    counts: dict[str, int] = {}
    for name, _ in found:
        counts[name] = counts.get(name, 0) + 1
    # the same file name from two folders: name the folder too
    return [(f"{notebook.parent.name}__{name}" if counts[name] > 1 else name, notebook)
            for name, notebook in found]


def grade_all(submissions: list[tuple[str, Path]], out: Path, *, seed: int, timeout: float,
              lesson: str | None = None, exercise_timeout: float | None = None,
              resume: bool = False) -> list[tuple[str, Report]]:
    """Grade every (name, notebook) into out/<name>.json and .md (and .executed.ipynb); with
    resume, a report newer than its notebook is kept. grades.csv is the caller's (write_csv)."""
    bank.all_exercises()  # load every reference before any submission runs (and could edit files)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, Report]] = []
    for name, notebook in tqdm(submissions, desc="grading", unit="notebook",
                               disable=len(submissions) == 1):
        report_path = out / f"{name}.json"
        if resume and (earlier := load_report(report_path, newer_than=notebook)):
            rows.append((name, earlier))
            continue
        report = grade_submission(notebook, seed=seed, timeout=timeout, lesson=lesson,
                                  exercise_timeout=exercise_timeout,
                                  keep_executed=out / f"{name}.executed.ipynb")
        report_path.write_text(json.dumps(asdict(report), indent=1) + "\n", encoding="utf-8")
        (out / f"{name}.md").write_text(markdown(report), encoding="utf-8")
        rows.append((name, report))
    return rows
