"""What every noisy-label method shares: a model factory, and confident rows to stop early on.

No gold label may be read, so early stopping and model choice use the rows whose annotation is
confident (>= 0.9 by default, class-balanced): from the validation pair when one is given, else
held out of the training rows. `out_of_fold_proba` gives each row a prediction from a model that
did not train on it (cleanlab and the transition estimate of forward correction use it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from labkit.noisy.selection import Selection, select_confident, take
from labkit.vertical.base import Features, Validation, VerticalModel, check_targets, sides
from labkit.vertical.torch_models import TorchModel

ModelFactory = Callable[[int], VerticalModel]  # seed -> a new, unfitted model


@dataclass
class StopSet:
    """The confident rows used for early stopping, and the training rows that remain."""

    train_rows: np.ndarray
    X: Any
    targets: np.ndarray
    source: str  # "validation" or "train"
    selection: Selection
    rows: np.ndarray | None = None  # the rows of X held out, when the source is "train"

    @property
    def validation(self) -> Validation:
        return self.X, self.targets

    def summary(self) -> dict[str, Any]:
        return {"stop_source": self.source, "stop_rows": len(self.targets),
                "stop_selection": self.selection.summary()}


def stopping_set(X: Features, targets: np.ndarray, validation: Validation | None, *, seed: int,
                 threshold: float = 0.9, fraction: float = 0.2) -> StopSet:
    """Confident rows for early stopping.

    From the validation pair when given (all training rows stay for training); otherwise a
    `fraction` of the confident training rows, stratified by class, is held out of training.
    """
    if validation is not None:
        X_val, t_val = validation
        t_val = check_targets(t_val, len(X_val), "validation")
        sel = select_confident(t_val, threshold)
        return StopSet(np.arange(len(targets)), take(X_val, sel.indices), sel.targets(t_val),
                       "validation", sel)
    sel = select_confident(targets, threshold)
    rng = np.random.default_rng(seed)
    held = []  # positions in sel.indices
    for c in (0, 1):
        positions = np.flatnonzero(sel.labels == c)
        held.append(rng.permutation(positions)[: max(2, int(round(fraction * len(positions))))])
    kept = np.sort(np.concatenate(held))
    stop_rows = sel.indices[kept]
    train_rows = np.setdiff1d(np.arange(len(targets)), stop_rows)
    return StopSet(train_rows, take(X, stop_rows), sel.targets(targets)[kept], "train", sel,
                   stop_rows)


def require_torch(model: VerticalModel, method: str) -> TorchModel:
    """The model as a TorchModel, or a clear error for methods that train networks themselves."""
    if not isinstance(model, TorchModel):
        raise TypeError(f"method {method!r} trains the networks itself and needs a torch model "
                        f"(mlp, ft_transformer, text_minilm); the factory made {type(model).__name__}")
    return model


def out_of_fold_proba(factory: ModelFactory, X: Features, targets: np.ndarray, *, seed: int,
                      folds: int = 5) -> np.ndarray:
    """P(positive) for every row from a model that did not train on it (k-fold).

    Each fold's model stops early on confident rows held out of its own training folds, so the
    probabilities come from a model that has not memorized its noise either. It stops on log
    loss: these probabilities estimate P(noisy label | x), and loss is what rewards calibrated
    ones (an error-rate stop leaves them overconfident, which hides noise from the estimates).
    """
    side = sides(targets)
    out = np.zeros(len(targets))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (fit_rows, held_rows) in enumerate(splitter.split(np.zeros(len(side)), side)):
        X_fit, t_fit = take(X, fit_rows), targets[fit_rows]
        stop = stopping_set(X_fit, t_fit, None, seed=seed + k)
        model = factory(seed + k)
        # When every target is on one side of 0.5, the stop rows that stand for the other class
        # carry a hard label the soft targets never reach, and the loss on them rises while the
        # model learns the ranking: it stopped at once (HCV: every out-of-fold prediction within
        # 0.41-0.50). The AUC against the stop rows' classes still measures the ranking.
        model.stop_metric = "loss" if 0 < (t_fit >= 0.5).sum() < len(t_fit) else "auc"
        model.fit(take(X_fit, stop.train_rows), t_fit[stop.train_rows], validation=stop.validation)
        out[held_rows] = model.predict_proba(take(X, held_rows))
    return out
