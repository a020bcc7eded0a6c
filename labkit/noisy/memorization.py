"""Memorization curves: how a network first learns the clean pattern, then the noise.

For a controlled experiment with a known truth (labels corrupted by `inject_noise`), record after
every epoch, on the training rows:

- fit_clean: accuracy against the label on rows whose label was kept (the pattern being learned);
- memorized: share of corrupted rows predicted as their *wrong* label (the noise being learned);
- corrected: share of corrupted rows predicted as their *true* label (the network overruling noise);
- test_accuracy: accuracy on clean test labels, when a test set is given.

Early in training `corrected` is high and `memorized` low; as epochs go on a flexible network
memorizes, `memorized` climbs toward 1 and test accuracy falls. This is the gap that early
stopping and the noisy-label methods exploit. Gold labels appear here for the picture only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from labkit.vertical.base import Features
from labkit.vertical.torch_models import TorchModel


def memorization_curve(model: TorchModel, X: Features, noisy_labels: np.ndarray,
                       clean_labels: np.ndarray, *,
                       test: tuple[Features, np.ndarray] | None = None) -> pd.DataFrame:
    """Train `model` on the noisy labels (no early stopping) and return one row per epoch."""
    if not isinstance(model, TorchModel):
        raise TypeError("memorization curves need a torch model (mlp, ft_transformer, "
                        f"text_minilm), got {type(model).__name__}")
    noisy = np.asarray(noisy_labels).astype(int)
    clean = np.asarray(clean_labels).astype(int)
    if noisy.shape != clean.shape or len(noisy) != len(X):
        raise ValueError(f"noisy_labels ({noisy.shape}), clean_labels ({clean.shape}) and X "
                         f"({len(X)} rows) must have one entry per row")
    corrupted = noisy != clean
    rows: list[dict[str, Any]] = []

    def record(epoch: int, fitted: TorchModel) -> None:
        pred = fitted.predict(X)
        row: dict[str, Any] = {
            "epoch": epoch,
            "fit_clean": float(np.mean(pred[~corrupted] == noisy[~corrupted])),
            "memorized": float(np.mean(pred[corrupted] == noisy[corrupted]))
            if corrupted.any() else np.nan,
            "corrected": float(np.mean(pred[corrupted] == clean[corrupted]))
            if corrupted.any() else np.nan,
        }
        if test is not None:
            row["test_accuracy"] = float(np.mean(fitted.predict(test[0]) == np.asarray(test[1])))
        rows.append(row)

    model.fit(X, noisy, on_epoch=record)
    return pd.DataFrame(rows)
