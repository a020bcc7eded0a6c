"""`labkit grade`: grade notebook submissions with hidden tests, outside the student's kernel.

    labkit grade SUBMISSION.ipynb [...] | FOLDER [--out grades] [--timeout 600] [--seed N]

How the grader works and what it protects against: labkit.grading.grader.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from labkit.grading.grader import collect, grade_all, write_csv


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="labkit grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", nargs="+", type=Path, help="notebooks and/or folders")
    parser.add_argument("--out", type=Path, default=Path("grades"), help="report folder")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds a notebook may run (default 600)")
    parser.add_argument("--exercise-timeout", type=float, default=None,
                        help="seconds for each exercise's hidden tests (default: the exercise's)")
    parser.add_argument("--seed", type=int, default=None,
                        help="hidden-input seed (default: drawn now and written in each report)")
    parser.add_argument("--lesson", default=None, help="lesson of every submission, e.g. 01")
    parser.add_argument("--resume", action="store_true",
                        help="keep reports that are newer than their notebook")
    parser.add_argument("--require-full", action="store_true",
                        help="exit 1 unless every submission gets full marks (for CI on solutions/)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        submissions = collect(args.submissions)
    except FileNotFoundError as err:
        print(f"labkit grade: {err}", file=sys.stderr)
        return 2
    if not submissions:
        print("labkit grade: no notebooks found in " + ", ".join(map(str, args.submissions)),
              file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    rows = grade_all(submissions, args.out, seed=seed, timeout=args.timeout, lesson=args.lesson,
                     exercise_timeout=args.exercise_timeout, resume=args.resume)
    if len(args.submissions) > 1 or args.submissions[0].is_dir():
        write_csv(rows, args.out / "grades.csv")
    width = max(len(name) for name, _ in rows)
    print(f"{'submission':<{width}} | points | run")
    for name, report in rows:
        print(f"{name:<{width}} | {report.total:>2} / {report.max:<2} | "
              f"{report.execution.get('status')}")
    print(f"reports in {args.out}/ (seed {seed})")
    if args.require_full and not all(report.full_marks for _, report in rows):
        return 1
    return 0
