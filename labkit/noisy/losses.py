"""Losses for learning from noisy, soft labels.

All take logits (one per row) and targets in [0, 1] and return one loss per row, so that callers
can weight, select (small-loss tricks) or average them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from labkit.vertical.training import LossFn, soft_bce

__all__ = ["forward_corrected_bce", "prior_penalty", "sharpen", "soft_bce"]


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """Push probabilities toward 0 or 1 (MixMatch's sharpening, two classes): p^(1/T) normalized."""
    a, b = p.pow(1 / temperature), (1 - p).pow(1 / temperature)
    return a / (a + b).clamp_min(1e-12)


def forward_corrected_bce(transition: np.ndarray) -> LossFn:
    """Forward loss correction (Patrini et al. 2017) for two classes.

    transition[i, j] = P(noisy label j | true label i). The network predicts the clean
    P(positive) = p; the loss compares the implied noisy probability
    q = P(noisy 1) = (1 - p) * T[0, 1] + p * T[1, 1] with the noisy target. The network is never
    asked to reproduce a flip, so it has no reason to memorize one.
    """
    t = np.asarray(transition, dtype=np.float64)
    if t.shape != (2, 2) or not np.allclose(t.sum(axis=1), 1) or (t < 0).any():
        raise ValueError(f"transition must be a 2x2 row-stochastic matrix, got {t.tolist()}")
    t01, t11 = float(t[0, 1]), float(t[1, 1])

    def loss(logits: Tensor, targets: Tensor) -> Tensor:
        p = torch.sigmoid(logits)
        q = ((1 - p) * t01 + p * t11).clamp(1e-6, 1 - 1e-6)
        return -(targets * q.log() + (1 - targets) * (1 - q).log())

    return loss


def prior_penalty(probs: Tensor, prior: float) -> Tensor:
    """KL(prior || mean prediction) for two classes: DivideMix's guard against predicting one class
    for everything when most labels are guessed by the networks themselves."""
    mean = probs.mean().clamp(1e-6, 1 - 1e-6)
    pi = min(max(prior, 1e-6), 1 - 1e-6)
    return pi * torch.log(pi / mean) + (1 - pi) * torch.log((1 - pi) / (1 - mean))
