"""The exercise bank: one module per lesson, `lNN.py` (`la1.py` for lesson A1), each with a list
`EXERCISES` of `labkit.grading.Exercise`. Modules are found automatically: adding a lesson's
exercises is adding its module (docs/teaching.md walks through it).

The reference solutions live here, so graded code may not import this package (see worker.py).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from labkit.grading.exercise import Exercise


def _lesson_of_module(module_name: str) -> str:
    """"l00" -> "00", "la1" -> "A1"."""
    return module_name[1:].upper()


@cache
def _registry() -> dict[str, Exercise]:
    """Every exercise of every bank module, by id; checks ids, lessons and names once."""
    registry: dict[str, Exercise] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("l"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        lesson = _lesson_of_module(info.name)
        exercises = getattr(module, "EXERCISES", None)
        if not isinstance(exercises, list | tuple):
            raise TypeError(f"{module.__name__} must define EXERCISES, a list of Exercise")
        names: set[str] = set()
        for exercise in exercises:
            if exercise.lesson != lesson:
                raise ValueError(f"{module.__name__}: exercise {exercise.id!r} belongs to lesson "
                                 f"{exercise.lesson}; move it to bank/l{exercise.lesson.lower()}.py")
            if exercise.id in registry:
                raise ValueError(f"{module.__name__}: exercise id {exercise.id!r} is used twice")
            if exercise.function in names:
                raise ValueError(f"{module.__name__}: two exercises ask for `{exercise.function}`; "
                                 "the grader finds an exercise by its function name")
            names.add(exercise.function)
            registry[exercise.id] = exercise
    return registry


def all_exercises() -> list[Exercise]:
    """Every registered exercise, ordered by lesson then as listed in its module."""
    return list(_registry().values())


def exercises(lesson: str) -> list[Exercise]:
    """The exercises of one lesson ("00", "A1"); empty when the lesson has none."""
    return [e for e in _registry().values() if e.lesson == lesson.upper()]


def get(exercise_id: str) -> Exercise:
    """The exercise with this id, or a KeyError that lists the known ids."""
    try:
        return _registry()[exercise_id]
    except KeyError:
        known = ", ".join(_registry()) or "none"
        raise KeyError(f"no exercise {exercise_id!r}; known exercises: {known}") from None
