"""Confidence selection: the rows whose (LLM) label is trusted, class by class.

SERVAL keeps the annotations with confidence above 0.9 and balances the classes; those rows
serve for training (sample selection) and for early stopping, since no gold label may be read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

Balance = Literal["equal", "prior", "none"]


@dataclass
class Selection:
    """Rows selected as confident, and how they were chosen.

    indices: the selected rows (sorted). labels: the class each selected row stands for (its
    target's side of 0.5, except after a rank fallback). available: confident rows per class
    before balancing. counts: selected rows per class. fallback: True when a class had fewer than
    `min_per_class` confident rows, so its most confident rows were taken regardless of the
    threshold; when no row at all leaned to a class, the rows ranked closest to it stand for it.
    """

    indices: np.ndarray
    threshold: float
    counts: dict[int, int]
    available: dict[int, int]
    fallback: bool = False
    notes: list[str] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))

    def summary(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "selected": self.counts,
                "confident": self.available, "fallback": self.fallback, "notes": self.notes}

    def targets(self, targets: np.ndarray) -> np.ndarray:
        """The targets of the selected rows; a row that stands for the class its target does not
        lean to (rank fallback) gets that class as a hard 0/1 target."""
        t = np.asarray(targets, dtype=np.float64)[self.indices]
        return np.where((t >= 0.5) == (self.labels == 1), t, self.labels.astype(np.float64))


def confidence(targets: np.ndarray) -> np.ndarray:
    """Confidence of a soft label in its own class: max(p, 1 - p)."""
    p = np.asarray(targets, dtype=np.float64)
    return np.maximum(p, 1 - p)


def select_confident(targets: np.ndarray, threshold: float = 0.9, *, balance: Balance = "equal",
                     min_per_class: int = 10) -> Selection:
    """The rows whose target is at least `threshold` confident, balanced between the classes.

    balance: "equal" keeps the same number per class (the most confident ones), "prior" keeps
    the classes in the proportion of the mean target (the estimated prevalence), "none" keeps
    all confident rows. With hard 0/1 targets every row is confident.
    """
    p = np.asarray(targets, dtype=np.float64)
    if not 0.5 <= threshold < 1:
        raise ValueError(f"threshold must be in [0.5, 1), got {threshold}")
    conf, label = confidence(p), (p >= 0.5).astype(int)
    by_class = {c: np.flatnonzero(label == c) for c in (0, 1)}
    empty = [c for c, rows in by_class.items() if len(rows) == 0]
    if empty and np.ptp(p) == 0:
        raise ValueError(f"no row leans to class {empty[0]} (all targets are {p[0]:.3g}); "
                         "confidence selection needs targets that tell the rows apart")
    # Most confident first; the row index breaks ties so the order is deterministic.
    ranked = {c: rows[np.lexsort((rows, -conf[rows]))] for c, rows in by_class.items()}
    available = {c: int((conf[rows] >= threshold).sum()) for c, rows in ranked.items()}
    selection = Selection(np.array([], dtype=int), threshold, {}, available)
    if empty:
        ranked = _rank_fallback(p, empty[0], min_per_class, selection)
    take = _balanced_counts(available, p.mean(), balance)
    for c in (0, 1):
        if take[c] < min_per_class:
            take[c] = min(min_per_class, len(ranked[c]))
            selection.fallback = True
            selection.notes.append(f"class {c}: {available[c]} row(s) at confidence >= "
                                   f"{threshold}; took the {take[c]} most confident instead")
    chosen = {c: ranked[c][: take[c]] for c in (0, 1)}
    rows = np.concatenate([chosen[0], chosen[1]])
    order = np.argsort(rows)
    selection.indices = rows[order]
    selection.labels = np.repeat([0, 1], [len(chosen[0]), len(chosen[1])])[order]
    selection.counts = {c: int(take[c]) for c in (0, 1)}
    return selection


def _rank_fallback(p: np.ndarray, empty: int, n: int, selection: Selection
                   ) -> dict[int, np.ndarray]:
    """When no target leans to class `empty` (a shy annotator on a rare class: every P(Yes) below
    0.5, yet well ranked), the n rows ranked closest to it stand for it; the other class keeps
    its rows, most confident first. Returns the ranked rows per class."""
    rows = np.arange(len(p))
    toward = p if empty == 1 else 1 - p
    order = rows[np.lexsort((rows, -toward))]  # closest to the empty class first
    stand_in, rest = order[:n], order[n:][::-1]  # the rest: most confident in the other class first
    selection.fallback = True
    selection.notes.append(
        f"class {empty}: no row leans to it (every target on the other side of 0.5); the {n} "
        f"rows ranked closest to it stand for it (targets {toward[stand_in].min():.3f}-"
        f"{toward[stand_in].max():.3f} towards it)")
    return {empty: stand_in, 1 - empty: rest}


def _balanced_counts(available: dict[int, int], prevalence: float, balance: Balance
                     ) -> dict[int, int]:
    if balance == "none":
        return dict(available)
    if balance == "equal":
        n = min(available.values())
        return {0: n, 1: n}
    if balance == "prior":
        share = {0: 1 - prevalence, 1: prevalence}
        # The largest total that keeps the proportion without exceeding either class.
        total = min(available[c] / share[c] for c in (0, 1) if share[c] > 0)
        return {c: min(available[c], int(round(total * share[c]))) for c in (0, 1)}
    raise ValueError(f"balance must be 'equal', 'prior' or 'none', not {balance!r}")


def take(X: pd.DataFrame | np.ndarray | list[Any], rows: np.ndarray) -> Any:
    """Rows of a frame, array or list of texts, in the given order."""
    if isinstance(X, pd.DataFrame | pd.Series):
        return X.iloc[rows].reset_index(drop=True)
    if isinstance(X, np.ndarray):
        return X[rows]
    return [X[i] for i in rows]
