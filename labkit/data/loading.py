"""Reading a shipped CSV into a clean frame, and the Dataset with its splits.

Every problem in a file is reported with the file, the column, the row and the fix: a teaching kit
must never train on a silently mangled table.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from labkit.data.schema import Schema, canonical_code
from labkit.data.schema_file import SUFFIXES, read_schema, schema_path
from labkit.paths import DATASETS_DIR

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
LABEL = "label"


class DataError(ValueError):
    """A dataset file does not match its schema."""


def _where(path: Path, column: str | None = None, line: int | None = None) -> str:
    at = str(path)
    if line is not None:
        at += f", line {line}"
    if column is not None:
        at += f", column {column!r}"
    return at


def _read_raw(schema: Schema, path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(
            f"{path}: file not found for dataset {schema.name!r}. The kit ships it in data/datasets/; "
            "restore it with `git checkout -- data/datasets` (or pass the right path)."
        )
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV file ({err}); restore the shipped file.") from err
    raw.columns = [c.strip() for c in raw.columns]
    expected = [*(schema.drop), schema.task.target, *schema.rename] + [
        f.name for f in schema.features if f.name not in schema.rename.values()
    ]
    missing = [c for c in expected if c not in raw.columns]
    unexpected = [c for c in raw.columns if c not in expected]
    if missing:
        hint = f"; the file has unexpected columns {unexpected} (misnamed?)" if unexpected else ""
        raise DataError(
            f"{path}: column(s) {missing} missing for dataset {schema.name!r}{hint}. "
            f"Expected columns: {expected}."
        )
    if unexpected:
        raise DataError(
            f"{path}: unexpected column(s) {unexpected} for dataset {schema.name!r}; "
            "add them to its schema file (data/datasets/<name>.yaml) or remove them from the file."
        )
    return raw.rename(columns=schema.rename)


def parse(schema: Schema, path: Path | None = None) -> pd.DataFrame:
    """Read a dataset file and check every value against the schema.

    Returns the feature columns (numbers as float, codes as canonical strings, missing as NaN),
    the original target column, and `label` (0/1). Rows whose target is in `task.excluded` are
    left out. Raises DataError naming the file, line and column of the first bad value.
    """
    path = Path(path) if path is not None else DATASETS_DIR / schema.file
    raw = _read_raw(schema, path)
    task = schema.task
    out: dict[str, object] = {}
    lines = np.arange(len(raw)) + 2  # line 1 is the header
    for f in schema.features:
        values = raw[f.name].str.strip()
        missing = values.isin(schema.na_values)
        if f.kind == "text":
            out[f.name] = values.where(~missing, None)
            continue
        if f.kind == "numeric":
            numbers = pd.to_numeric(values.where(~missing, None), errors="coerce")
            bad = numbers.isna() & ~missing
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(
                    f"{_where(path, f.name, int(lines[i]))}: {values.iloc[i]!r} is not a number. "
                    f"Fix the value, or write one of {list(schema.na_values)} for a missing value."
                )
            if f.zero_is_missing:
                numbers = numbers.mask(numbers == 0)
            out[f.name] = numbers.astype(float)
            continue
        codes = values.map(canonical_code)
        bad = ~codes.isin(list(f.codes)) & ~missing
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{_where(path, f.name, int(lines[i]))}: {values.iloc[i]!r} is not a known code; "
                f"expected one of {list(f.codes)} or a missing value."
            )
        out[f.name] = codes.where(~missing, None)
    target = raw[task.target].str.strip().map(canonical_code)
    known = set(task.positive) | set(task.negative) | set(task.excluded)
    bad = ~target.isin(known)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{_where(path, task.target, int(lines[i]))}: target {raw[task.target].iloc[i]!r} is not "
            f"one of {sorted(known)}."
        )
    frame = pd.DataFrame(out)
    frame[task.target] = target
    frame[LABEL] = target.isin(task.positive).astype(int)
    return frame[~target.isin(task.excluded)].reset_index(drop=True)


@cache
def _parse_cached(name: str) -> pd.DataFrame:
    from labkit.data.registry import SCHEMAS

    return parse(SCHEMAS[name])


def split_indices(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Stratified 60/20/20 train/val/test row indices; the same seed gives the same split."""
    rows = np.arange(len(labels))
    train, rest = train_test_split(rows, train_size=SPLIT_FRACTIONS[0], stratify=labels,
                                   random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=labels[rest], random_state=seed)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


@dataclass
class Dataset:
    """A loaded dataset with its schema and a deterministic split (see `load`)."""

    schema: Schema
    frame: pd.DataFrame
    seed: int = 0

    def __post_init__(self) -> None:
        self._index = split_indices(self.frame[LABEL].to_numpy(), self.seed)

    def _check(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")

    def split(self, split: str) -> pd.DataFrame:
        """All columns of the rows in one split ("train", "val" or "test")."""
        self._check(split)
        return self.frame.iloc[self._index[split]].reset_index(drop=True)

    def features(self, split: str) -> pd.DataFrame:
        """The feature columns only: what a model (or the LLM) may see."""
        return self.split(split)[self.schema.feature_names]

    def labels(self, split: str) -> np.ndarray:
        """Gold 0/1 labels. In SERVAL they are read for evaluation only."""
        return self.split(split)[LABEL].to_numpy()

    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s} {len(self._index[s])}" for s in SPLITS)
        return f"Dataset({self.schema.name!r}, {len(self)} rows: {sizes}; seed {self.seed})"


def load(name: str | Path, seed: int = 0) -> Dataset:
    """Load a dataset, split by `seed`: a shipped one by name (see `DATASETS`), or a teacher's by
    the path of its schema file or of its folder (labkit.data.schema_file; docs/teaching.md)."""
    from labkit.data.registry import SCHEMAS

    if isinstance(name, Path) or Path(name).suffix in SUFFIXES or Path(name).is_dir():
        schema, path = read_dataset(Path(name))
        return Dataset(schema, parse(schema, path), seed)
    if name not in SCHEMAS:
        raise KeyError(f"unknown dataset {name!r}; choose one of {list(SCHEMAS)}, or give the path of "
                       "a dataset's schema file or folder (docs/teaching.md, 'Add your own task')")
    return Dataset(SCHEMAS[name], _parse_cached(name).copy(), seed)


def read_dataset(path: Path) -> tuple[Schema, Path]:
    """A teacher's dataset: its schema (from the YAML file, or the one in the folder) and its CSV."""
    schema_file = schema_path(path)
    schema = read_schema(schema_file)
    return schema, schema_file.parent / schema.file


def check(schema: Schema, path: Path) -> pd.DataFrame:
    """Parse a dataset's file (`parse`: every value against the schema) and check that it has the
    rows, columns and class counts its schema expects, the figures of the dataset's official
    description. Returns the parsed frame; raises DataError naming the file and what differs."""
    frame = parse(schema, path)
    rows, columns = _read_raw(schema, path).shape
    counts = {int(k): int(v) for k, v in frame[LABEL].value_counts().sort_index().items()}
    found = {"n_rows": rows, "n_columns": columns, "class_counts": counts}
    expected = {"n_rows": schema.n_rows, "n_columns": schema.n_columns, "class_counts": schema.class_counts}
    wrong = [f"{k}: the schema says {expected[k]}, the file has {found[k]}" for k in expected
             if expected[k] != found[k]]
    if wrong:
        raise DataError(f"{path}: {'; '.join(wrong)}. Fix the schema's figures if the file is right "
                        "(they should be the dataset's documented ones), or restore the file.")
    return frame
