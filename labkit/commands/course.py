"""`labkit course`: build the student notebooks from the solutions, and run the whole course.

    labkit course build [--check]     solutions/NN_*.ipynb -> notebooks/NN_*.ipynb
    labkit course run [NOTEBOOK ...] [--solutions] [--out runs] [--timeout S] [--resume]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labkit.course import BuildError, build, drift, run_notebooks, write_built
from labkit.grading.execute import Execution


def build_command(root: Path, check: bool) -> int:
    try:
        built = build(root)
    except BuildError as err:
        print(f"labkit course build: {err}", file=sys.stderr)
        return 2
    if check:
        problems = drift(root, built)
        for problem in problems:
            print(f"out of sync: {problem}", file=sys.stderr)
        if problems:
            print("run `labkit course build` and commit notebooks/", file=sys.stderr)
            return 1
        print(f"notebooks/ is in sync with solutions/ ({len(built)} notebooks)")
        return 0
    changed = write_built(built)
    print(f"built {len(built)} student notebooks in notebooks/ ({changed} changed)")
    for problem in drift(root, built):
        print(f"warning: {problem}", file=sys.stderr)
    return 0


def run_command(root: Path, paths: list[Path], *, solutions: bool, out: Path, timeout: float,
                resume: bool, fast: bool = True, html: bool = False) -> int:
    if not paths:
        folder = root / ("solutions" if solutions else "notebooks")
        paths = sorted(folder.glob("*.ipynb"))
        if not paths:
            print(f"labkit course run: no notebooks in {folder}", file=sys.stderr)
            return 2
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"labkit course run: no such notebook: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    results = run_notebooks(paths, out, timeout=timeout, resume=resume, fast=fast, html=html)
    print_table(results)
    print(f"executed notebooks in {out}/")
    return 0 if all(r.status == "ok" for _, r in results) else 1


def print_table(results: list[tuple[Path, Execution]]) -> None:
    """notebook | status | seconds, then the error of each failed notebook."""
    width = max(len("notebook"), *(len(str(p)) for p, _ in results))
    print(f"{'notebook':<{width}} | status  | seconds")
    print(f"{'-' * width}-|---------|--------")
    for path, result in results:
        print(f"{str(path):<{width}} | {result.status:<7} | {result.seconds:7.1f}")
    for path, result in results:
        if result.status != "ok":
            print(f"{path}: {result.error}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=Path.cwd(),
                        help="the kit's root folder (default: here)")
    parser = argparse.ArgumentParser(prog="labkit course",
                                     description="build the student notebooks; run the course")
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", parents=[common], help="notebooks/ from solutions/")
    build_parser.add_argument("--check", action="store_true",
                              help="change nothing; exit 1 naming every notebook out of sync")
    run_parser = commands.add_parser("run", parents=[common],
                                     help="execute notebooks headless (FAST=True unless --full)")
    run_parser.add_argument("paths", nargs="*", type=Path,
                            help="notebooks to run (default: every notebooks/*.ipynb)")
    run_parser.add_argument("--solutions", action="store_true",
                            help="run solutions/*.ipynb instead of notebooks/")
    run_parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs)")
    run_parser.add_argument("--timeout", type=float, default=1800,
                            help="seconds each notebook may run (default 1800)")
    run_parser.add_argument("--resume", action="store_true",
                            help="skip notebooks whose earlier run succeeded and is up to date")
    run_parser.add_argument("--full", dest="fast", action="store_false",
                            help="run with FAST=False: the lesson's full version, as the book shows it")
    run_parser.add_argument("--html", action="store_true",
                            help="also render each successful run to HTML beside it")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.command == "build":
        return build_command(args.root, args.check)
    return run_command(args.root, args.paths, solutions=args.solutions, out=args.out or args.root / "runs",
                       timeout=args.timeout, resume=args.resume, fast=args.fast, html=args.html)
