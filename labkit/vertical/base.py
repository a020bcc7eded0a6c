"""The one interface every vertical model follows, and the checks its inputs go through.

    model.fit(X, targets, sample_weight=None, validation=None)   # targets: 0/1 or probabilities
    model.predict_proba(X)                                        # P(positive), a 1-D array

X is the feature frame of a split (`ds.features("train")`), or a 2-D array when the model has no
schema. `validation` is `(X_val, targets_val)`: the models use it to choose how long to train
(torch) or how strongly to regularize (scikit-learn); targets there may be soft too.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

Features: TypeAlias = pd.DataFrame | np.ndarray
Validation: TypeAlias = tuple[Features, np.ndarray]
StopMetric = Literal["loss", "accuracy", "auc"]


def check_targets(targets: Any, n_rows: int, what: str = "targets") -> np.ndarray:
    """Targets as a float array of probabilities in [0, 1], one per row; clear errors otherwise."""
    array = np.asarray(targets, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 2:
        raise ValueError(f"{what}: got two columns; pass P(positive) only, e.g. probs[:, 1]")
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of 0/1 labels or probabilities, "
                         f"got shape {array.shape}")
    if len(array) != n_rows:
        raise ValueError(f"{what}: {len(array)} values for {n_rows} rows of X")
    bad = ~np.isfinite(array) | (array < 0) | (array > 1)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} value(s) outside [0, 1] or NaN, first at row "
                         f"{int(np.flatnonzero(bad)[0])}; targets are labels 0/1 or probabilities")
    return array


def sides(targets: np.ndarray) -> np.ndarray:
    """The class (0/1) each row stands for: its target's side of 0.5, or, when every target is
    on one side of 0.5, a cut at the estimated prevalence.

    A shy annotator on a rare class (HCV: every P(Yes) of the pocket LLM below 0.5) still ranks
    the rows well; rounding would leave one class, and a method that selects or splits rows per
    class would then drop exactly the rows the annotator suspects, and learn the ranking
    backwards (docs/noisy_labels.md has the measurement). The cut keeps the ranking: the
    round(n * mean target) rows with the largest targets (at least one, at most n - 1) are class
    1; ties are broken by row order, so the split is deterministic. Constant targets carry no
    ranking at all: ValueError, with the counts and the fix.
    """
    p = np.asarray(targets, dtype=np.float64)
    rounded = (p >= 0.5).astype(int)
    if 0 < rounded.sum() < len(p):
        return rounded
    if len(p) < 2 or np.ptp(p) == 0:
        value = f"{p[0]:.3g}" if len(p) else "none"
        raise ValueError(
            f"all {len(p)} targets are {value} (class 0: {len(p) - int(rounded.sum())} rows, "
            f"class 1: {int(rounded.sum())}): one class and no ranking, nothing to learn from. "
            "Fix: ask the annotator for probabilities (token mode) instead of rounded Yes/No "
            "answers, check its prompt and parser on a few rows, or label a few rows by hand")
    n_positive = int(np.clip(round(len(p) * p.mean()), 1, len(p) - 1))
    rows = np.arange(len(p))
    order = rows[np.lexsort((rows, -p))]  # largest target first, row order breaks ties
    cut = np.zeros(len(p), dtype=int)
    cut[order[:n_positive]] = 1
    return cut


def check_weights(sample_weight: Any, n_rows: int) -> np.ndarray:
    """Non-negative sample weights (ones when None), with at least one positive weight."""
    if sample_weight is None:
        return np.ones(n_rows)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_rows,) or not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"sample_weight: expected {n_rows} finite non-negative numbers, got an "
                         f"array of shape {weights.shape}")
    if weights.sum() == 0:
        raise ValueError("sample_weight: all weights are zero; nothing to train on")
    return weights


def as_two_classes(targets: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                      np.ndarray]:
    """Rows twice, once per class, weighted by the soft target: (row index, label, weight).

    Minimizing weighted log loss on these rows equals minimizing the cross-entropy against the soft
    targets, which lets scikit-learn classifiers that only accept hard labels learn from
    probabilities. Rows with zero weight are left out.
    """
    rows = np.concatenate([np.arange(len(targets))] * 2)
    labels = np.concatenate([np.ones(len(targets)), np.zeros(len(targets))]).astype(int)
    w = np.concatenate([targets * weights, (1 - targets) * weights])
    keep = w > 0
    return rows[keep], labels[keep], w[keep]


def soft_log_loss(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean binary cross-entropy of predicted P(positive) against soft targets."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))


def validation_score(probs: np.ndarray, targets: np.ndarray, metric: StopMetric) -> float:
    """What validation minimizes (lower is better).

    "loss": soft log loss. "accuracy": the expected error rate of the 0/1 predictions against the
    (soft) targets, ties broken by AUC. "auc": 1 - AUC against the targets' `sides` (rounded, or
    cut at the estimated prevalence when all are on one side of 0.5: the ranking still counts).
    Loss suits clean labels. On noisy labels it rewards timid predictions (every confident
    prediction on a wrong label costs a lot), so it stops training too early; the error rate on
    noisy labels moves with the error rate on the true ones (under symmetric noise it is an affine
    function of it), which makes it the better guide there.
    """
    if metric == "loss":
        return soft_log_loss(probs, targets)
    if metric not in ("accuracy", "auc"):
        raise ValueError(f"stop_metric must be 'loss', 'accuracy' or 'auc', not {metric!r}")
    hard = sides(targets) if np.ptp(targets) > 0 else targets >= 0.5
    auc_gap = 1.0 - float(roc_auc_score(hard, probs)) if 0 < hard.sum() < len(hard) else 0.5
    if metric == "auc":
        return auc_gap
    predicted = probs >= 0.5
    error = float(np.mean(np.where(predicted, 1 - targets, targets)))
    return error + 1e-4 * auc_gap


class VerticalModel(ABC):
    """A small domain model: fit on (possibly soft) targets, predict P(positive).

    `info` records what the last fit did (epochs, chosen regularization, selection sizes, ...).
    `stop_metric` is what validation minimizes when a validation pair is given ("loss",
    "accuracy" or "auc", see `validation_score`); the noisy-label methods set "accuracy".
    """

    name: str = "model"
    stop_metric: StopMetric = "loss"

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}

    @abstractmethod
    def fit(self, X: Features, targets: Any, sample_weight: Any = None,
            validation: Validation | None = None) -> VerticalModel:
        """Train on X with targets in [0, 1] (hard labels or probabilities)."""

    @abstractmethod
    def predict_proba(self, X: Features) -> np.ndarray:
        """P(positive) for each row of X, a 1-D float array."""

    def predict(self, X: Features, threshold: float = 0.5) -> np.ndarray:
        """0/1 predictions at a probability threshold."""
        return (self.predict_proba(X) >= threshold).astype(int)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
