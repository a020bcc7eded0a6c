"""Controlled label noise: corrupt known clean labels to study the methods where the truth is known.

- symmetric: every label flips with probability `rate`.
- asymmetric: only labels of class `source` flip, with probability `rate` (e.g. an annotator who
  misses half of the sick patients).
- instance: the flip probability depends on the features (some patients are harder to read):
  q_i = rate + 0.1 * (standardized projection of x_i on a random direction per class), kept in
  [0, 0.49] (a two-class form of the instance-dependent noise of Xia et al. 2020).

`simulate_soft_labels` turns such noisy labels into annotator-like probabilities, for experiments
with soft labels where the truth is known; `flip_soft_labels` adds random flips to an annotator's
probabilities.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

NoiseKind = Literal["symmetric", "asymmetric", "instance"]


def _check_labels(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be a 1-D array of 0/1 values")
    return y.astype(int)


def instance_flip_rates(X: np.ndarray | pd.DataFrame, labels: np.ndarray, rate: float,
                        rng: np.random.Generator, spread: float = 0.1) -> np.ndarray:
    """Per-row flip probabilities around `rate` that depend on the row's features.

    q_i = rate + spread * z_i, where z_i is the standardized projection of the row on a random
    direction chosen per class (Xia et al. 2020 draw per-row rates with standard deviation 0.1
    around the mean rate). Kept below 0.5: where most labels flip, the flipped concept is all
    the data shows, and no method could tell it from the true one.
    """
    try:
        values = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError("instance-dependent noise needs numeric features; encode them first, "
                         "e.g. Preprocessor(schema).fit(X).flat(X)") from err
    if values.ndim != 2 or len(values) != len(labels):
        raise ValueError(f"X must be 2-D with one row per label; got shape {values.shape}")
    std = np.nanstd(values, axis=0)
    z = np.nan_to_num((values - np.nanmean(values, axis=0)) / np.where(std > 0, std, 1))
    directions = rng.normal(size=(2, values.shape[1]))
    score = np.einsum("ij,ij->i", z, directions[labels])
    score = (score - score.mean()) / (score.std() or 1.0)
    return np.clip(rate + spread * score, 0.0, 0.49)


def inject_noise(labels: np.ndarray, rate: float, kind: NoiseKind = "symmetric", *,
                 X: np.ndarray | pd.DataFrame | None = None, source: int = 1,
                 seed: int = 0) -> np.ndarray:
    """Noisy copies of 0/1 labels (see the module docstring for the kinds). Same seed, same flips."""
    y = _check_labels(labels)
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    rng = np.random.default_rng(seed)
    if kind == "symmetric":
        flip_rate = np.full(len(y), rate)
    elif kind == "asymmetric":
        flip_rate = np.where(y == source, rate, 0.0)
    elif kind == "instance":
        if X is None:
            raise ValueError("instance-dependent noise needs the features: pass X=")
        flip_rate = instance_flip_rates(X, y, rate, rng)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; choose symmetric, asymmetric or instance")
    flip = rng.random(len(y)) < flip_rate
    return np.where(flip, 1 - y, y)


def simulate_soft_labels(labels: np.ndarray, rate: float, kind: NoiseKind = "symmetric", *,
                         X: np.ndarray | pd.DataFrame | None = None, seed: int = 0,
                         right: tuple[float, float] = (4.0, 1.5),
                         wrong: tuple[float, float] = (2.0, 2.0)) -> np.ndarray:
    """Annotator-like probabilities: noisy labels (as `inject_noise`) with a confidence each.

    The confidence in the noisy label is 0.5 + 0.5 * Beta(a, b): with `right` for labels that were
    kept (mean 0.86 by default) and `wrong` for flipped ones (mean 0.75). So the annotator is
    somewhat less sure when it is wrong, as zero-shot LLMs tend to be, yet often confidently wrong.
    """
    y = _check_labels(labels)
    noisy = inject_noise(y, rate, kind, X=X, seed=seed)
    rng = np.random.default_rng([seed, 1])
    confidence = np.where(noisy == y, rng.beta(*right, size=len(y)), rng.beta(*wrong, size=len(y)))
    confidence = 0.5 + 0.5 * confidence
    return np.where(noisy == 1, confidence, 1 - confidence)


def flip_soft_labels(probs: np.ndarray, rate: float, seed: int = 0) -> np.ndarray:
    """Random flips of an annotator's probabilities: each row's p becomes 1 - p where
    `inject_noise`'s symmetric noise would flip a label (same seed, same rows). Added to an
    annotator whose mistakes are systematic (a textbook rule), it gives the random kind the
    noisy-label methods were built for."""
    p = np.asarray(probs, dtype=np.float64)
    flipped = inject_noise(np.zeros(len(p), dtype=int), rate, seed=seed).astype(bool)
    return np.where(flipped, 1 - p, p)
