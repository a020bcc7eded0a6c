"""`check("00.warmup")`: immediate feedback in the notebook, from the exercise's visible examples.

It runs in the student's own kernel, so it is feedback, not a grade: the grade comes from
`labkit grade`, which tests hidden inputs in a separate process (grader.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from labkit.grading.exercise import Exercise
from labkit.grading.worker import to_plain

Status = Literal["passed", "failed", "not attempted", "missing"]


@dataclass
class CheckResult:
    """What `check` found: a status and the lines it prints."""

    exercise: Exercise
    status: Status
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        e = self.exercise
        head = f"{e.id} ({e.tier}, {e.points} point{'s' if e.points != 1 else ''}): {self.status}"
        return "\n".join([head, *(f"  {line}" for line in self.lines)])


def run_check(exercise_id: str, namespace: dict[str, Any]) -> CheckResult:
    """Run the visible examples of `exercise_id` on the function of that name in `namespace`."""
    from labkit.grading.bank import get  # the bank imports pandas: load it only when checking

    exercise = get(exercise_id)
    function = namespace.get(exercise.function)
    if not callable(function):
        return CheckResult(exercise, "missing", [
            f"Define a function `{exercise.function}` first (then run this cell again).",
            f"Task: {exercise.task}",
        ])
    for number, example in enumerate(exercise.examples, start=1):
        call = example.describe(exercise.function)
        try:
            got = to_plain(example.call(function))
        except NotImplementedError:
            return CheckResult(exercise, "not attempted", [
                f"`{exercise.function}` still raises NotImplementedError: write its body, then run "
                "this cell again.", f"Task: {exercise.task}",
            ])
        except Exception as err:  # noqa: BLE001 - feedback must show the student's error, not crash
            return CheckResult(exercise, "failed", [f"example {number}: {call} raised "
                                                    f"{type(err).__name__}: {err}"])
        expected = to_plain(example.call(exercise.reference))
        if (difference := exercise.compare(got, expected)) is not None:
            return CheckResult(exercise, "failed", [f"example {number}: {call}: {difference}"])
    return CheckResult(exercise, "passed", [
        f"All {len(exercise.examples)} visible examples pass. The grader also tries inputs you "
        "have not seen, so make it work in general.",
    ])


def check(exercise_id: str) -> None:
    """Print feedback on exercise `exercise_id` for the function defined in the calling notebook."""
    caller = inspect.currentframe()
    namespace = caller.f_back.f_globals if caller is not None and caller.f_back else {}
    print(run_check(exercise_id, namespace).summary())


def attempt(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)`, where a lesson puts the student's function to work on real data;
    None, with a note, while it still raises NotImplementedError, so that the student notebook runs
    top to bottom before it is written."""
    try:
        return function(*args, **kwargs)
    except NotImplementedError:
        print(f"`{getattr(function, '__name__', function)}` is not written yet: this cell skips it. "
              "Write it, then run this cell again.")
        return None
