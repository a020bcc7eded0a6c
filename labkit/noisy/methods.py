"""Learning from noisy labels: one entry point, `fit_noisy`, for every method.

    model = fit_noisy("divide_mix", lambda seed: make_model("mlp", schema, seed=seed),
                      X_train, llm_probabilities, validation=(X_val, llm_val_probabilities))
    model.predict_proba(X_test)

The targets are what the annotator said (hard 0/1 or soft probabilities). No method reads a gold
label: early stopping and model choice use the *confident* annotated rows (confidence >= 0.9,
class-balanced), taken from the validation pair when one is given, else held out of the training
rows. Methods:

- naive: the model's standard training on all targets; no early stopping (the baseline).
- early_stop: all targets, early stopping on the confident rows (memorization sets in late).
- confident: train on the class-balanced confident rows only (sample selection).
- cleanlab: confident learning (Northcutt et al. 2021) drops the rows it finds mislabeled.
- forward: forward loss correction (Patrini et al. 2017) with an estimated transition matrix.
- co_teaching: two networks teach each other with their small-loss rows (Han et al. 2018).
- divide_mix: two networks, Gaussian-mixture split into clean and noisy rows, semi-supervised
  training with label co-refinement, co-guessing and mixup (Li et al. 2020), for tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from labkit.noisy.losses import forward_corrected_bce
from labkit.noisy.selection import Selection, select_confident, take
from labkit.vertical.base import (
    Features,
    StopMetric,
    Validation,
    VerticalModel,
    check_targets,
)
from labkit.vertical.torch_models import TorchModel
from labkit.vertical.training import seeded, train_network

ModelFactory = Callable[[int], VerticalModel]
Method = Callable[..., VerticalModel]


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


# ----- methods that only call model.fit -----
def naive(factory: ModelFactory, X: Features, targets: np.ndarray, *,
          validation: Validation | None, seed: int) -> VerticalModel:
    """The model's standard training on the targets as they are (the baseline)."""
    return factory(seed).fit(X, targets)


def early_stop(factory: ModelFactory, X: Features, targets: np.ndarray, *,
               validation: Validation | None, seed: int, threshold: float = 0.9) -> VerticalModel:
    """All targets, with early stopping on the confident rows."""
    stop = stopping_set(X, targets, validation, seed=seed, threshold=threshold)
    model = factory(seed).fit(take(X, stop.train_rows), targets[stop.train_rows],
                              validation=stop.validation)
    model.info.update(stop.summary())
    return model


def confident(factory: ModelFactory, X: Features, targets: np.ndarray, *,
              validation: Validation | None, seed: int, threshold: float = 0.9) -> VerticalModel:
    """Train on the class-balanced confident rows only, early stopping on confident rows."""
    stop = stopping_set(X, targets, validation, seed=seed, threshold=threshold)
    X_train, t_train = take(X, stop.train_rows), targets[stop.train_rows]
    sel = select_confident(t_train, threshold)
    model = factory(seed).fit(take(X_train, sel.indices), sel.targets(t_train),
                              validation=stop.validation)
    model.info.update(stop.summary(), selection=sel.summary())
    return model


def out_of_fold_proba(factory: ModelFactory, X: Features, targets: np.ndarray, *, seed: int,
                      folds: int = 5) -> np.ndarray:
    """P(positive) for every row from a model that did not train on it (k-fold).

    Each fold's model stops early on confident rows held out of its own training folds, so the
    probabilities come from a model that has not memorized its noise either. It stops on log
    loss: these probabilities estimate P(noisy label | x), and loss is what rewards calibrated
    ones (an error-rate stop leaves them overconfident, which hides noise from the estimates).
    """
    hard = (targets >= 0.5).astype(int)
    out = np.zeros(len(targets))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (fit_rows, held_rows) in enumerate(splitter.split(np.zeros(len(hard)), hard)):
        X_fit, t_fit = take(X, fit_rows), targets[fit_rows]
        stop = stopping_set(X_fit, t_fit, None, seed=seed + k)
        model = factory(seed + k)
        model.stop_metric = "loss"
        model.fit(take(X_fit, stop.train_rows), t_fit[stop.train_rows], validation=stop.validation)
        out[held_rows] = model.predict_proba(take(X, held_rows))
    return out


def cleanlab_filter(factory: ModelFactory, X: Features, targets: np.ndarray, *,
                    validation: Validation | None, seed: int, folds: int = 5) -> VerticalModel:
    """Confident learning: drop the rows cleanlab flags as mislabeled, then train on the rest."""
    from cleanlab.filter import find_label_issues

    oof = out_of_fold_proba(factory, X, targets, seed=seed, folds=folds)
    hard = (targets >= 0.5).astype(int)
    issues = find_label_issues(hard, np.column_stack([1 - oof, oof]))
    kept = np.flatnonzero(~issues)
    model = early_stop(factory, take(X, kept), targets[kept], validation=validation, seed=seed)
    model.info.update(removed=int(issues.sum()), kept=len(kept))
    return model


# ----- forward correction -----
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
    with seeded(model.seed):
        net = model.new_network()
        result = train_network(net, x, y, config=model.config, seed=model.seed,
                               validation=(stop_x, stop_y), loss=forward_corrected_bce(transition),
                               stop_metric=model.stop_metric, desc="forward")
    model.networks = [net]
    model.info = {**result.summary(), **stop.summary(), "transition": transition.round(3).tolist()}
    return model


def _methods() -> dict[str, Method]:
    from labkit.noisy.two_networks import co_teaching, divide_mix

    return {"naive": naive, "early_stop": early_stop, "confident": confident,
            "cleanlab": cleanlab_filter, "forward": forward, "co_teaching": co_teaching,
            "divide_mix": divide_mix}


METHODS: tuple[str, ...] = ("naive", "early_stop", "confident", "cleanlab", "forward",
                            "co_teaching", "divide_mix")


def fit_noisy(method: str, model_factory: ModelFactory, X: Features, noisy_targets: Any, *,
              validation: Validation | None = None, seed: int = 0,
              stop_metric: StopMetric = "accuracy",
              **options: Any) -> VerticalModel:
    """Train a vertical model on noisy (hard or soft) targets with a named method.

    model_factory(seed) returns a new, unfitted model; validation is (X_val, annotated targets),
    never gold labels. stop_metric: what early stopping on the confident rows minimizes (see
    `validation_score`): the error rate by default, since loss on noisy labels favors timid,
    undertrained models.
    options go to the method (e.g. threshold=, forget_rate=, config=).
    Returns the fitted model; `model.info` records what the method did.
    """
    methods = _methods()
    if method not in methods:
        raise KeyError(f"unknown method {method!r}; choose one of {list(methods)}")
    targets = check_targets(noisy_targets, len(X), "noisy_targets")
    if validation is not None:
        check_targets(validation[1], len(validation[0]), "validation targets")
    def factory(model_seed: int) -> VerticalModel:
        model = model_factory(model_seed)
        model.stop_metric = stop_metric
        return model

    model = methods[method](factory, X, targets, validation=validation, seed=seed, **options)
    model.info["method"] = method
    return model
