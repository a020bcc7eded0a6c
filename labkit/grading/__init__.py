"""Exercises and auto-grading.

In a notebook:      from labkit.grading import check; check("00.warmup")
                    attempt(your_function, ...)   # None while it is not written yet
For a teacher:      labkit grade SUBMISSION.ipynb | FOLDER      (grader.py)
Adding exercises:   labkit/grading/bank/lNN.py, see docs/teaching.md
"""

from labkit.grading.check import attempt, check
from labkit.grading.exercise import TIERS, Case, Exercise, case, close

__all__ = ["TIERS", "Case", "Exercise", "attempt", "case", "check", "close"]
