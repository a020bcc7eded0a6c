"""Exercises of lesson 03 (learning from noisy labels)."""

from __future__ import annotations

import math

import numpy as np

from labkit.grading.exercise import Case, Exercise, case, close


def flip_labels(labels: np.ndarray, rate: float, seed: int = 0) -> np.ndarray:
    """Reference: symmetric noise. rng = default_rng(seed); row i flips when rng.random(n)[i] < rate."""
    y = np.asarray(labels).astype(int)
    flip = np.random.default_rng(seed).random(len(y)) < rate
    return np.where(flip, 1 - y, y)


def forward_loss(logits: np.ndarray, noisy_targets: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """Reference: forward-corrected binary cross-entropy per row (Patrini et al. 2017), the loss
    of labkit.noisy.forward_corrected_bce: p = sigmoid(logit), q = (1 - p) T[0][1] + p T[1][1]
    clamped to [1e-6, 1 - 1e-6], loss = -(y log q + (1 - y) log(1 - q))."""
    import torch

    from labkit.noisy import forward_corrected_bce

    loss = forward_corrected_bce(np.asarray(transition, dtype=np.float64))
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(noisy_targets, dtype=np.float64))
    return loss(z, y).numpy()


def _ranked(rows: np.ndarray, key: np.ndarray) -> np.ndarray:
    """rows sorted by key ascending, ties by row index."""
    return rows[np.lexsort((rows, key[rows]))]


def confident_rows(probs: np.ndarray, threshold: float = 0.9) -> np.ndarray:
    """Reference: rows with max(p, 1 - p) >= threshold, the same number per class (class: p >= 0.5),
    the most confident ones of each class (ties: lower index first), as sorted indices."""
    p = np.asarray(probs, dtype=np.float64)
    conf, label = np.maximum(p, 1 - p), p >= 0.5
    chosen = [np.flatnonzero((label == c) & (conf >= threshold)) for c in (False, True)]
    n = min(len(rows) for rows in chosen)
    return np.sort(np.concatenate([_ranked(rows, -conf)[:n] for rows in chosen])).astype(int)


def small_loss_rows(losses: np.ndarray, labels: np.ndarray, keep_share: float) -> np.ndarray:
    """Reference: per class (label >= 0.5), the ceil(keep_share * n_class) rows of smallest loss
    (ties: lower index first), as sorted indices."""
    loss = np.asarray(losses, dtype=np.float64)
    label = np.asarray(labels, dtype=np.float64) >= 0.5
    keep = []
    for c in (False, True):
        rows = np.flatnonzero(label == c)
        keep.append(_ranked(rows, loss)[: math.ceil(keep_share * len(rows))])
    return np.sort(np.concatenate(keep)).astype(int)


# ----- hidden cases -----
def _hidden_flip(rng: np.random.Generator) -> list[Case]:
    cases = [case(rng.integers(0, 2, int(rng.integers(1, 300))), float(rng.uniform(0, 0.6)),
                  seed=int(rng.integers(0, 10_000))) for _ in range(6)]
    cases.append(case(rng.integers(0, 2, 50), 0.0, seed=1))  # no noise: nothing flips
    return cases


def _soft_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.beta(0.5, 0.5, n)
    p[rng.random(n) < 0.2] = rng.choice([0.0, 0.05, 0.95, 1.0])  # repeated values: ties
    return p


def _hidden_confident(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        n = int(rng.integers(2, 200))
        cases.append(case(_soft_labels(rng, n), threshold=float(rng.uniform(0.5, 0.99))))
    cases.append(case(np.array([0.99, 0.97, 0.1, 0.6]), threshold=0.95))  # one class has none
    return cases


def _transition(t01: float, t11: float) -> np.ndarray:
    return np.array([[1 - t01, t01], [1 - t11, t11]])


def _hidden_forward(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        n = int(rng.integers(1, 120))
        logits = rng.normal(0, 3, n)
        targets = rng.random(n) if rng.random() < 0.5 else rng.integers(0, 2, n).astype(float)
        transition = _transition(float(rng.uniform(0, 0.45)), float(rng.uniform(0.55, 1)))
        cases.append(case(logits, targets, transition))
    # no noise, and sure logits: q reaches 0 or 1 unless clamped
    cases.append(case(np.array([40.0, -40.0, 40.0, -40.0, 0.0]), np.array([0.0, 1.0, 1.0, 0.0, 0.3]),
                      _transition(0.0, 1.0)))
    # one-sided noise: positives are missed 40% of the time, negatives never flip
    cases.append(case(rng.normal(0, 2, 30), rng.integers(0, 2, 30).astype(float), _transition(0.0, 0.6)))
    return cases


def _hidden_small_loss(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        n = int(rng.integers(1, 150))
        losses = np.round(rng.exponential(1.0, n), int(rng.integers(1, 4)))  # rounding: ties
        labels = rng.random(n) if rng.random() < 0.5 else rng.integers(0, 2, n).astype(float)
        cases.append(case(losses, labels, float(rng.uniform(0.0, 1.0))))
    return cases


EXERCISES = [
    Exercise(
        id="03.flip",
        function="flip_labels",
        tier="warm-up",
        points=1,
        task="flip_labels(labels, rate, seed) flips each 0/1 label where "
             "np.random.default_rng(seed).random(n) < rate (symmetric noise).",
        reference=flip_labels,
        examples=(case(np.array([0, 1, 1, 0, 1, 0, 0, 1]), 0.3, seed=0),
                  case(np.array([1, 1, 0]), 0.0, seed=5)),
        hidden=_hidden_flip,
    ),
    Exercise(
        id="03.confident",
        function="confident_rows",
        tier="core",
        points=2,
        task="confident_rows(probs, threshold) returns the sorted indices of the class-balanced "
             "confident rows: max(p, 1 - p) >= threshold, the same number per class (the most "
             "confident, ties by lower index).",
        reference=confident_rows,
        examples=(case(np.array([0.95, 0.02, 0.5, 0.91, 0.97, 0.08, 0.3, 0.99]), threshold=0.9),
                  case(np.array([0.1, 0.2, 0.93]), threshold=0.8)),
        hidden=_hidden_confident,
    ),
    Exercise(
        id="03.forward",
        function="forward_loss",
        tier="core",
        points=2,
        task="forward_loss(logits, noisy_targets, transition) returns the forward-corrected "
             "binary cross-entropy of each row: p = sigmoid(logit), q = (1 - p) T[0][1] + "
             "p T[1][1] clamped to [1e-6, 1 - 1e-6], loss = -(y log q + (1 - y) log(1 - q)), "
             "in torch, returned as a numpy array.",
        reference=forward_loss,
        examples=(case(np.array([2.0, -1.0, 0.0, 3.0]), np.array([1.0, 0.0, 0.7, 0.0]),
                       _transition(0.2, 0.7)),
                  case(np.array([0.5, -0.5]), np.array([1.0, 1.0]), _transition(0.0, 1.0))),
        hidden=_hidden_forward,
        compare=close(rtol=1e-4, atol=1e-6),  # float32 arithmetic is fine
    ),
    Exercise(
        id="03.small_loss",
        function="small_loss_rows",
        tier="stretch",
        points=3,
        task="small_loss_rows(losses, labels, keep_share) returns the sorted indices of the "
             "ceil(keep_share * n) smallest-loss rows of each class (label >= 0.5), ties by "
             "lower index: the rows co-teaching passes to the peer network.",
        reference=small_loss_rows,
        examples=(case(np.array([0.1, 2.0, 0.3, 0.05, 1.5, 0.3]),
                       np.array([0, 0, 0, 1, 1, 1]), 0.5),
                  case(np.array([0.7, 0.2, 0.9, 0.4]), np.array([0.9, 0.2, 0.6, 0.1]), 0.4)),
        hidden=_hidden_small_loss,
    ),
]
