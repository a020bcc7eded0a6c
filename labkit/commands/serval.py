"""`labkit serval`: the SERVAL loop over the five SERVAL tables and the neoplasm text task.

Every ServalConfig field is a flag (`labkit serval --help`), e.g.
    labkit serval --tasks hcv --iterations 1
    labkit serval --config my_run.yaml --seed 1
    labkit serval --tasks heart --val_labels 50   # the guard: 50 gold validation rows (labkit.guard)
    labkit serval --tasks docs/examples/breast_cytology   # a dataset described by files
Writes the results table, every record and a figure into --out, and resumes what is there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from labkit import config
from labkit.data import load
from labkit.guard import GoldReport
from labkit.serval import (
    ABLATIONS,
    TASKS,
    ServalConfig,
    check_vertical,
    results_table,
    run,
    save_results,
    summary,
)

# A small, quick run (CI, smoke tests).
FAST = {"max_train_rows": 120, "max_backtune_examples": 64, "num_train_epochs": 1}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, ServalConfig]:
    parser = argparse.ArgumentParser(prog="labkit serval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    command = parser.add_argument_group("the run")
    command.add_argument("--tasks", nargs="+", default=list(TASKS), metavar="TASK",
                         help=f"shipped tasks ({', '.join(TASKS)}) or the folders or schema files of "
                              "your own datasets (docs/teaching.md, 'Add your own task')")
    command.add_argument("--llm", default=None, help="model folder or hub id (default: the pocket LLM)")
    command.add_argument("--out", type=Path, default=Path("runs/serval"),
                         help="output folder (resumes what is there)")
    command.add_argument("--ablation", default="full", choices=ABLATIONS,
                         help="one of the paper's ablations, applied over the settings")
    command.add_argument("--fast", action="store_true", help=f"a small, quick run: {FAST}")
    config.add_config_file(command)
    config.add_arguments(parser, ServalConfig)
    args = config.parse(parser, argv, presets={"fast": FAST})
    unknown = [t for t in args.tasks if t not in TASKS and not Path(t).exists()]
    if unknown:
        parser.error(f"--tasks: {unknown} are neither shipped tasks ({', '.join(TASKS)}) "
                     "nor paths that exist")
    return args, config.from_arguments(ServalConfig, args).ablation(args.ablation)


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(list(argv or []))
    for task in args.tasks:  # every task's settings are checked before the first run starts
        check_vertical(load(task, seed=settings.seed), settings)
    results = [run(task, args.llm, settings, args.out) for task in args.tasks]
    table = results_table(results)
    print(table.to_string())
    print(summary(table))
    for result in results:
        for line in result.warnings + (GoldReport(**result.gold).lines() if result.gold else []):
            print(f"{result.task}: {line}")
    written = save_results(results, args.out)
    print("\nwrote " + ", ".join(map(str, written)))
    return 0
