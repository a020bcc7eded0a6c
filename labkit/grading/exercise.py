"""What an exercise is: a function the student writes, a reference solution, visible examples and
hidden cases, plus the comparison that decides whether an answer is right.

Answers are compared as *plain data* (numbers, strings, lists, dicts: see `worker.to_plain`), never
as the objects a student's function returns, so an object with a custom `__eq__` cannot pass.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Tier = Literal["warm-up", "core", "stretch"]
TIERS: tuple[str, ...] = ("warm-up", "core", "stretch")

# "00.warmup", "01.ece", "A1.tokens": lesson number (or A1...), a dot, a short lower-case name.
EXERCISE_ID = re.compile(r"^(\d{2}|A\d)\.[a-z0-9_]+$")

# A comparison returns None when `got` matches `expected`, else a sentence saying what differs.
Comparator = Callable[[Any, Any], "str | None"]


@dataclass(frozen=True)
class Case:
    """One call of the student's function: positional and keyword arguments."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def call(self, function: Callable[..., Any]) -> Any:
        """Call `function` on copies of the arguments (a function that mutates its input must not
        change the case for the next caller)."""
        return function(*copy.deepcopy(self.args), **copy.deepcopy(self.kwargs))

    def describe(self, name: str) -> str:
        """`name(arg, key=value)` with each argument shortened, for feedback messages."""
        parts = [short(a) for a in self.args] + [f"{k}={short(v)}" for k, v in self.kwargs.items()]
        return f"{name}({', '.join(parts)})"


def case(*args: Any, **kwargs: Any) -> Case:
    """`case(frame, n_bins=10)` reads like the call it stands for."""
    return Case(args, kwargs)


def short(value: Any, width: int = 70) -> str:
    """A one-line description of a value: tables by shape, long reprs cut."""
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, np.generic) and len(shape) == 2:
        return f"<{type(value).__name__} {shape[0]}x{shape[1]}>"
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def close(rtol: float = 1e-6, atol: float = 1e-9) -> Comparator:
    """Compare plain data: numbers within tolerance (NaN equals NaN), strings, booleans and None
    exactly, lists element by element, dicts key by key."""

    def compare(got: Any, expected: Any) -> str | None:
        return _mismatch(got, expected, rtol, atol, "")

    return compare


def _mismatch(got: Any, expected: Any, rtol: float, atol: float, where: str) -> str | None:
    at = f" at {where}" if where else ""
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        if type(got) is type(expected) and got == expected:
            return None
        return f"got {short(got)}{at}, expected {short(expected)}"
    if isinstance(expected, int | float):
        return _number_mismatch(got, expected, rtol, atol, at)
    if isinstance(expected, list):
        if not isinstance(got, list):
            return f"got {short(got)}{at}, expected a list/array like {short(expected)}"
        if len(got) != len(expected):
            return f"got {len(got)} elements{at}, expected {len(expected)}"
        pairs = [(g, e, f"{where}[{i}]") for i, (g, e) in enumerate(zip(got, expected, strict=True))]
        return _first_mismatch(pairs, rtol, atol)
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"got {short(got)}{at}, expected a dict like {short(expected)}"
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        if missing or extra:
            return f"keys{at} differ: missing {missing}, unexpected {extra}"
        return _first_mismatch([(got[k], expected[k], f"{where}[{k!r}]") for k in expected], rtol, atol)
    raise TypeError(f"expected value of type {type(expected).__name__} is not plain data")


def _number_mismatch(got: Any, expected: float, rtol: float, atol: float, at: str) -> str | None:
    if isinstance(got, bool) or not isinstance(got, int | float):
        return f"got {short(got)}{at}, expected the number {short(expected)}"
    if math.isnan(expected) or math.isnan(got):
        same = math.isnan(expected) and math.isnan(got)
    else:
        same = math.isclose(got, expected, rel_tol=rtol, abs_tol=atol)
    return None if same else f"got {short(got)}{at}, expected {short(expected)}"


def _first_mismatch(pairs: list[tuple[Any, Any, str]], rtol: float, atol: float) -> str | None:
    """The first difference among (got, expected, where) pairs, or None."""
    for got, expected, where in pairs:
        if (message := _mismatch(got, expected, rtol, atol, where)) is not None:
            return message
    return None


@dataclass(frozen=True)
class Exercise:
    """One exercise. See docs/teaching.md for how to add one.

    id: "NN.name", NN the lesson. function: the name the student defines in the notebook.
    task: one sentence, shown in feedback and reports. reference: the teacher's solution; it runs only
    in the grader's (or the checking kernel's) process. examples: visible cases that `check()` runs.
    hidden: draws the grader's cases from a random generator (fresh inputs at every grading).
    compare: decides whether a student's plain output matches the reference's.
    time_limit_s: how long all hidden cases together may take in the student's code.
    """

    id: str
    function: str
    tier: Tier
    points: int
    task: str
    reference: Callable[..., Any]
    examples: tuple[Case, ...]
    hidden: Callable[[np.random.Generator], Sequence[Case]]
    compare: Comparator = field(default_factory=close)
    time_limit_s: float = 30.0

    def __post_init__(self) -> None:
        problems = []
        if not EXERCISE_ID.match(self.id):
            problems.append("id must look like '00.warmup' (lesson, dot, lower-case name)")
        if not self.function.isidentifier():
            problems.append(f"function {self.function!r} is not a Python name")
        if self.tier not in TIERS:
            problems.append(f"tier {self.tier!r} is not one of {TIERS}")
        if self.points <= 0:
            problems.append("points must be positive")
        if not self.examples:
            problems.append("give at least one visible example")
        if problems:
            raise ValueError(f"exercise {self.id!r}: " + "; ".join(problems))

    @property
    def lesson(self) -> str:
        """The lesson part of the id: "00" for "00.warmup"."""
        return self.id.split(".", 1)[0]
