"""Metrics for binary predictions: ranking (AUC), decisions (accuracy, F1), probabilities (Brier,
ECE, reliability diagram), and two recalibrations fitted on a validation split (temperature and
Platt scaling).

Conventions:
- `y` holds the gold labels 0/1; `p` the predicted probability of label 1 (hard 0/1 predictions are
  probabilities too, for accuracy and F1).
- Missing predictions (NaN, e.g. an LLM answer that could not be parsed) are REFUSED with an error
  that counts them. Dropping them silently would score a model only on the rows it chose to answer.
  Drop them yourself and report how many (`keep = ~np.isnan(p)`), or use
  `binary_report(..., missing="drop")`, which does that and returns the count beside the scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, logit
from scipy.stats import rankdata

if TYPE_CHECKING:
    from matplotlib.axes import Axes

BinStrategy = Literal["width", "mass"]
# Probabilities of exactly 0 or 1 (common in verbalized answers) have infinite logits; they are
# clipped to [EPS, 1 - EPS] before a logit is taken.
EPS = 1e-6


class MissingPredictionError(ValueError):
    """Some predictions are NaN; metrics refuse them instead of dropping them silently."""


def _labels(y: object) -> np.ndarray:
    arr = np.asarray(y, dtype=float).ravel()
    if np.isnan(arr).any():
        n_nan = int(np.isnan(arr).sum())
        raise ValueError(f"y: {n_nan} gold labels are NaN; labels must be 0 or 1")
    if not np.isin(arr, (0.0, 1.0)).all():
        bad = np.unique(arr[~np.isin(arr, (0.0, 1.0))])[:5]
        raise ValueError(f"y: labels must be 0 or 1, found {bad.tolist()}")
    return arr.astype(int)


def _probabilities(p: object, n: int | None = None) -> np.ndarray:
    arr = np.asarray(p, dtype=float).ravel()
    n = arr.shape[0] if n is None else n
    if arr.shape[0] != n:
        raise ValueError(f"p has {arr.shape[0]} predictions but y has {n} labels")
    missing = np.flatnonzero(np.isnan(arr))
    if missing.size:
        raise MissingPredictionError(
            f"p: {missing.size} of {n} predictions are missing (NaN), at positions "
            f"{missing[:10].tolist()}{' ...' if missing.size > 10 else ''}. Metrics do not drop "
            "them silently: drop them yourself and report the count (keep = ~np.isnan(p)), or "
            "use binary_report(y, p, missing='drop')."
        )
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"p: probabilities must lie in [0, 1]; found {arr.min()} to {arr.max()}")
    return arr


def _check(y: object, p: object) -> tuple[np.ndarray, np.ndarray]:
    """Gold labels and predictions as float arrays, validated (see the module docstring)."""
    labels = _labels(y)
    return labels, _probabilities(p, labels.shape[0])


def auc(y: object, p: object) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative
    (ties count one half), computed from ranks (Mann-Whitney U)."""
    labels, scores = _check(y, p)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auc: needs both classes; y has {n_pos} positives and {n_neg} negatives")
    ranks = rankdata(scores)  # average ranks for ties
    u = ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def accuracy(y: object, p: object, threshold: float = 0.5) -> float:
    """Share of correct decisions, predicting 1 where p >= threshold."""
    labels, probs = _check(y, p)
    return float(np.mean((probs >= threshold).astype(int) == labels))


def f1(y: object, p: object, threshold: float = 0.5) -> float:
    """F1 of the positive class, predicting 1 where p >= threshold: 2TP / (2TP + FP + FN).

    0.0 when there is no positive in y and none predicted (as scikit-learn's zero_division=0).
    """
    labels, probs = _check(y, p)
    pred = (probs >= threshold).astype(int)
    tp = int(((pred == 1) & (labels == 1)).sum())
    wrong = int((pred != labels).sum())
    return 2 * tp / (2 * tp + wrong) if tp + wrong else 0.0


def brier(y: object, p: object) -> float:
    """Brier score: mean squared difference between probability and label (0 is perfect)."""
    labels, probs = _check(y, p)
    return float(np.mean((probs - labels) ** 2))


def reliability(
    y: object, p: object, n_bins: int = 10, strategy: BinStrategy = "width"
) -> pd.DataFrame:
    """The reliability diagram as a table, one row per bin.

    strategy "width": bins [0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1] (the last one closed); empty
    bins are kept with count 0 and NaN means. strategy "mass": the predictions sorted and cut into
    n_bins groups of (nearly) equal size; equal scores may fall into neighbouring bins.
    Columns: lo, hi (bin edges; for "mass" the smallest and largest score in the bin), count,
    confidence (mean p), frequency (share of label 1), gap (frequency - confidence).
    """
    labels, probs = _check(y, p)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    if strategy == "width":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        index = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, n_bins - 1)
        members = [np.flatnonzero(index == k) for k in range(n_bins)]
        bounds = [(edges[k], edges[k + 1]) for k in range(n_bins)]
    elif strategy == "mass":
        order = np.argsort(probs, kind="stable")
        members = [m for m in np.array_split(order, n_bins) if m.size]
        bounds = [(probs[m].min(), probs[m].max()) for m in members]
    else:
        raise ValueError(f"strategy must be 'width' or 'mass', got {strategy!r}")
    rows = []
    for (lo, hi), m in zip(bounds, members, strict=True):
        conf = probs[m].mean() if m.size else np.nan
        freq = labels[m].mean() if m.size else np.nan
        rows.append({"lo": lo, "hi": hi, "count": m.size, "confidence": conf, "frequency": freq})
    table = pd.DataFrame(rows)
    table["gap"] = table["frequency"] - table["confidence"]
    return table


def ece(y: object, p: object, n_bins: int = 10, strategy: BinStrategy = "width") -> float:
    """Expected calibration error: sum over bins of (count / N) * |frequency - confidence|.

    strategy "width" (equal-width bins) or "mass" (equal-mass bins); see `reliability`.
    """
    table = reliability(y, p, n_bins, strategy)
    filled = table[table["count"] > 0]
    return float((filled["count"] * filled["gap"].abs()).sum() / filled["count"].sum())


def plot_reliability(
    y: object,
    p: object,
    n_bins: int = 10,
    strategy: BinStrategy = "width",
    ax: Axes | None = None,
    label: str = "model",
) -> Axes:
    """Draw the reliability diagram (frequency against confidence per bin) on `ax`.

    Call it again with the same `ax` to compare models; the legend shows each one's ECE.
    The diagonal is perfect calibration; points below it are over-confident.
    """
    import matplotlib.pyplot as plt  # imported here: the metrics alone should not need a display

    table = reliability(y, p, n_bins, strategy)
    filled = table[table["count"] > 0]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    if not ax.get_lines():
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    value = ece(y, p, n_bins, strategy)
    curve_label = f"{label} (ECE {value:.3f})"
    ax.plot(filled["confidence"], filled["frequency"], marker="o", label=curve_label)
    ax.set_xlabel("mean predicted probability (confidence)")
    ax.set_ylabel("share of label 1 (frequency)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"reliability, {n_bins} equal-{strategy} bins")
    ax.legend(loc="upper left")
    return ax


def _nll(z: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of labels under probabilities sigmoid(z), computed stably."""
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def _logits(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(p, EPS, 1 - EPS))


class TemperatureScaling:
    """p -> sigmoid(logit(p) / T), with T fitted on a validation split by maximum likelihood.

    T > 1 softens over-confident probabilities, T < 1 sharpens timid ones; the ranking (AUC) does
    not change. Fit on validation data, never on the test split.
    """

    def __init__(self) -> None:
        self.temperature: float | None = None

    def fit(self, p: object, y: object) -> TemperatureScaling:
        labels, probs = _check(y, p)
        z = _logits(probs)
        # T is searched as log T, so that T stays positive: T in [e^-5, e^5].
        result = minimize_scalar(
            lambda log_t: _nll(z / np.exp(log_t), labels), bounds=(-5.0, 5.0), method="bounded"
        )
        self.temperature = float(np.exp(result.x))
        return self

    def transform(self, p: object) -> np.ndarray:
        if self.temperature is None:
            raise RuntimeError("TemperatureScaling: call fit(p_val, y_val) before transform(p)")
        probs = _probabilities(p)
        return expit(_logits(probs) / self.temperature)


class PlattScaling:
    """p -> sigmoid(a * logit(p) + b), with a and b fitted on a validation split by maximum
    likelihood (Platt, 1999, on the logit of the score; without Platt's label smoothing).

    Unlike temperature scaling it also moves the base rate (b), e.g. for a model that says "Yes"
    too often. With a > 0 the ranking does not change.
    """

    def __init__(self) -> None:
        self.a: float | None = None
        self.b: float | None = None

    def fit(self, p: object, y: object) -> PlattScaling:
        labels, probs = _check(y, p)
        z = _logits(probs)

        def loss_and_grad(ab: np.ndarray) -> tuple[float, np.ndarray]:
            s = ab[0] * z + ab[1]
            residual = expit(s) - labels  # d NLL / d s
            return _nll(s, labels), np.array([np.mean(residual * z), np.mean(residual)])

        result = minimize(loss_and_grad, x0=np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        self.a, self.b = float(result.x[0]), float(result.x[1])
        return self

    def transform(self, p: object) -> np.ndarray:
        if self.a is None or self.b is None:
            raise RuntimeError("PlattScaling: call fit(p_val, y_val) before transform(p)")
        probs = _probabilities(p)
        return expit(self.a * _logits(probs) + self.b)


def binary_report(
    y: object,
    p: object,
    n_bins: int = 10,
    threshold: float = 0.5,
    missing: Literal["raise", "drop"] = "raise",
) -> dict[str, float]:
    """All the metrics above in one dict.

    missing="raise" refuses NaN predictions; missing="drop" scores the answered rows only and
    reports how many were dropped (n_missing) beside n (the rows scored).
    """
    labels = _labels(y)
    probs = np.asarray(p, dtype=float).ravel()
    if probs.shape[0] != labels.shape[0]:
        raise ValueError(f"p has {probs.shape[0]} predictions but y has {labels.shape[0]} labels")
    if missing not in ("raise", "drop"):
        raise ValueError(f"missing must be 'raise' or 'drop', got {missing!r}")
    keep = ~np.isnan(probs) if missing == "drop" else np.ones(probs.shape, dtype=bool)
    labels, probs = labels[keep], probs[keep]
    return {
        "n": int(keep.sum()),
        "n_missing": int((~keep).sum()),
        "auc": auc(labels, probs),
        "accuracy": accuracy(labels, probs, threshold),
        "f1": f1(labels, probs, threshold),
        "brier": brier(labels, probs),
        "ece": ece(labels, probs, n_bins, "width"),
        "ece_mass": ece(labels, probs, n_bins, "mass"),
    }


def _ranks_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: the Pearson correlation of the ranks (ties get their mean rank).
    NaN when either side is constant: a constant answer has no order to follow."""
    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(p: object, q: object, threshold: float = 0.5) -> dict[str, float]:
    """How closely two probability readings of the same records agree (no gold labels involved).

    Written for the seminar's question "does the verbalized probability follow the model's token
    distribution?", but any two readings work (hard answers as 0/1 too). Returns
    n (rows), rank_correlation (Spearman: do they order the records alike? NaN when one side is
    constant), same_decision (share of rows on the same side of `threshold`, each deciding 1 at
    p >= threshold) and mean_abs_diff (mean |p - q|: do they state the same numbers?).
    Missing values (NaN) are refused, as by every metric here.
    """
    a, b = _probabilities(p), _probabilities(q)
    if a.shape != b.shape:
        raise ValueError(f"agreement: p has {a.size} rows but q has {b.size}; pass the same records")
    if a.size == 0:
        raise ValueError("agreement: needs at least one row")
    return {
        "n": int(a.size),
        "rank_correlation": _ranks_correlation(a, b),
        "same_decision": float(np.mean((a >= threshold) == (b >= threshold))),
        "mean_abs_diff": float(np.mean(np.abs(a - b))),
    }
