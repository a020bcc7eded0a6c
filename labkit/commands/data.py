"""`labkit data check PATH|NAME ...`: validate a dataset (a teacher's schema file or folder, or a
shipped name) before any run reads it: the schema's fields, every value of the CSV against it, and
the rows, columns and class counts it expects. Prints what it read, or the first problem with its
file, line and column; exits 1 if any dataset fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from labkit.data.loading import LABEL, DataError, check, read_dataset
from labkit.data.registry import SCHEMAS
from labkit.data.schema_file import SchemaError
from labkit.paths import DATASETS_DIR


def check_one(target: str) -> str:
    """One line about a dataset that passes; raises DataError or SchemaError otherwise."""
    if target in SCHEMAS:
        schema, path = SCHEMAS[target], DATASETS_DIR / SCHEMAS[target].file
    else:
        schema, path = read_dataset(Path(target))
    frame = check(schema, path)
    features = frame[schema.feature_names]
    missing = features.isna().sum()
    gaps = ", ".join(f"{c} {n}" for c, n in missing[missing > 0].items()) or "none"
    counts = frame[LABEL].value_counts()
    return (f"{schema.name}: ok ({path}: {len(frame)} rows used, {len(schema.features)} features; "
            f"label 1 '{schema.task.positive_name}' {counts.get(1, 0)}, label 0 "
            f"'{schema.task.negative_name}' {counts.get(0, 0)}; missing values: {gaps})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labkit data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["check"])
    parser.add_argument("targets", nargs="+", help="schema files, dataset folders or shipped names")
    args = parser.parse_args(argv)
    failed = 0
    for target in args.targets:
        try:
            print(check_one(target))
        except (DataError, SchemaError) as err:
            print(f"FAILED {err}")
            failed += 1
    return 1 if failed else 0
