"""Forward loss correction (Patrini et al. 2017): train against the clean label through an
estimated noise transition matrix, so the network never has to reproduce a flip.

    T = estimate_transition(out_of_fold_proba(factory, X, targets, seed=0))
    model = forward(factory, X, targets, validation=None, seed=0, transition=T)
"""

from __future__ import annotations

import numpy as np

from labkit.noisy.losses import forward_corrected_bce
from labkit.noisy.selection import take
from labkit.noisy.stopping import ModelFactory, out_of_fold_proba, require_torch, stopping_set
from labkit.vertical.base import Features, Validation, VerticalModel
from labkit.vertical.training import train_network


def estimate_transition(noisy_proba: np.ndarray, quantile: float = 0.97) -> np.ndarray:
    """T[i, j] = P(noisy label j | true label i), from anchor rows (Patrini et al. 2017).

    The rows a model of the noisy labels finds most surely positive are taken to be truly
    positive; its P(noisy positive) there estimates T[1, 1]. A high quantile instead of the
    maximum guards against a single overconfident row. Likewise for the negatives.
    """
    p = np.asarray(noisy_proba, dtype=np.float64)
    t11 = float(np.quantile(p, quantile))
    t01 = float(np.quantile(p, 1 - quantile))
    if t11 - t01 < 0.1:
        raise ValueError(f"the noisy labels look uninformative (anchor estimates P(noisy 1 | 1) "
                         f"= {t11:.2f}, P(noisy 1 | 0) = {t01:.2f}); forward correction needs "
                         "labels that are right more often than not")
    return np.array([[1 - t01, t01], [1 - t11, t11]])


def noise_rate(transition: np.ndarray, targets: np.ndarray) -> float:
    """Expected share of wrong labels implied by a transition matrix and the noisy prevalence."""
    t01, t11 = transition[0, 1], transition[1, 1]
    clean_prior = float(np.clip((np.mean(targets) - t01) / (t11 - t01), 0, 1))
    return float((1 - clean_prior) * t01 + clean_prior * (1 - t11))


def forward(factory: ModelFactory, X: Features, targets: np.ndarray, *,
            validation: Validation | None, seed: int, transition: np.ndarray | None = None,
            folds: int = 5) -> VerticalModel:
    """Forward loss correction; the transition matrix is estimated from out-of-fold predictions
    unless given."""
    if transition is None:
        transition = estimate_transition(out_of_fold_proba(factory, X, targets, seed=seed,
                                                           folds=folds))
    model = require_torch(factory(seed), "forward")
    stop = stopping_set(X, targets, validation, seed=seed)
    x = model.prepare(take(X, stop.train_rows))
    y = model.tensor(targets[stop.train_rows])
    stop_x, stop_y = model.inputs(stop.X), model.tensor(stop.targets)
    with model.seeded():
        net = model.new_network()
        result = train_network(net, x, y, config=model.config, seed=model.seed,
                               validation=(stop_x, stop_y), loss=forward_corrected_bce(transition),
                               stop_metric=model.stop_metric, desc="forward")
    model.networks = [net]
    model.info = {**result.summary(), **stop.summary(), "transition": transition.round(3).tolist()}
    return model
