"""Exercises of lesson 00 (welcome)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labkit.grading.exercise import Case, Exercise, case


def missing_share(frame: pd.DataFrame) -> dict[str, float]:
    """Reference: for every column, the fraction of its values that are missing."""
    return {str(column): float(frame[column].isna().mean()) for column in frame.columns}


def stratified_split(labels: np.ndarray, seed: int) -> dict[str, list[int]]:
    """Reference: per class (in sorted order), the class's row indices shuffled by one
    np.random.default_rng(seed); the first round(0.6 n_c) go to train, the next round(0.2 n_c) to
    val, the rest to test; each split's indices sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_train, n_val = round(0.6 * len(rows)), round(0.2 * len(rows))
        out["train"] += rows[:n_train].tolist()
        out["val"] += rows[n_train:n_train + n_val].tolist()
        out["test"] += rows[n_train + n_val:].tolist()
    return {split: sorted(int(i) for i in rows) for split, rows in out.items()}


def _random_frame(rng: np.random.Generator) -> pd.DataFrame:
    """A small table with numeric and text columns; each column has its own missing rate (0 to 1)."""
    n_rows = int(rng.integers(1, 30))
    names = rng.choice(["age", "glucose", "bmi", "sex", "alt", "note", "bp", "chol"],
                       size=int(rng.integers(1, 6)), replace=False)
    columns = {}
    for name in names:
        missing = rng.random(n_rows) < rng.choice([0.0, 0.2, 0.5, 1.0])
        if rng.random() < 0.3:  # text column: missing is None
            values = rng.choice(["a", "b", "c"], size=n_rows).astype(object)
            values[missing] = None
        else:
            values = np.round(rng.normal(50, 20, size=n_rows), 1)
            values[missing] = np.nan
        columns[str(name)] = values
    return pd.DataFrame(columns)


def _hidden_missing_share(rng: np.random.Generator) -> list[Case]:
    return [case(_random_frame(rng)) for _ in range(6)]


def _hidden_split(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        n = int(rng.integers(5, 120))
        labels = (rng.random(n) < rng.uniform(0.1, 0.9)).astype(int)
        cases.append(case(labels, int(rng.integers(0, 10_000))))
    return cases


EXERCISES = [
    Exercise(
        id="00.warmup",
        function="missing_share",
        tier="warm-up",
        points=1,
        task="missing_share(frame) returns {column: fraction of missing values} for every column.",
        reference=missing_share,
        examples=(
            case(pd.DataFrame({"age": [63, np.nan, 41, 55], "glucose": [np.nan, np.nan, 120, 98]})),
            case(pd.DataFrame({"sex": ["M", "F", None], "bmi": [22.1, 30.5, 27.0]})),
        ),
        hidden=_hidden_missing_share,
    ),
    Exercise(
        id="00.split",
        function="stratified_split",
        tier="core",
        points=2,
        task="stratified_split(labels, seed) returns {'train', 'val', 'test'}: per class in sorted order, "
             "its row indices shuffled by one np.random.default_rng(seed) (rng.permutation), the first "
             "round(0.6 n) to train, the next round(0.2 n) to val, the rest to test; each list sorted.",
        reference=stratified_split,
        examples=(case([0, 1, 0, 0, 1, 0, 1, 0, 0, 1], 0), case([1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 7)),
        hidden=_hidden_split,
    ),
]
