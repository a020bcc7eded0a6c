"""Learning from noisy labels: one entry point, `fit_noisy`, for every method.

    model = fit_noisy("divide_mix", lambda seed: make_model("mlp", schema, seed=seed),
                      X_train, llm_probabilities, validation=(X_val, llm_val_probabilities))
    model.predict_proba(X_test)

The targets are what the annotator said (hard 0/1 or soft probabilities). No method reads a gold
label: early stopping and model choice use the *confident* annotated rows (labkit.noisy.stopping).
Methods:

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

import typing
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from scipy.stats import spearmanr

from labkit.noisy.correction import forward
from labkit.noisy.selection import select_confident, take
from labkit.noisy.stopping import ModelFactory, out_of_fold_proba, stopping_set
from labkit.noisy.two_networks import co_teaching, divide_mix
from labkit.vertical.base import (
    Features,
    StopMetric,
    Validation,
    VerticalModel,
    check_targets,
    sides,
)

NoisyMethod = Literal["naive", "early_stop", "confident", "cleanlab", "forward", "co_teaching",
                      "divide_mix"]
NOISY_METHODS: tuple[str, ...] = typing.get_args(NoisyMethod)
MethodFn = Callable[..., VerticalModel]


class RankingDisagreement(ValueError):
    """A method's model does not rank the rows as its annotator does (see `check_agreement`);
    the refused model is kept in `.model` for inspection."""

    def __init__(self, message: str, model: VerticalModel):
        super().__init__(message)
        self.model = model


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


def cleanlab_filter(factory: ModelFactory, X: Features, targets: np.ndarray, *,
                    validation: Validation | None, seed: int, folds: int = 5) -> VerticalModel:
    """Confident learning: drop the rows cleanlab flags as mislabeled, then train on the rest."""
    from cleanlab.filter import find_label_issues

    oof = out_of_fold_proba(factory, X, targets, seed=seed, folds=folds)
    issues = find_label_issues(sides(targets), np.column_stack([1 - oof, oof]))
    kept = np.flatnonzero(~issues)
    model = early_stop(factory, take(X, kept), targets[kept], validation=validation, seed=seed)
    model.info.update(removed=int(issues.sum()), kept=len(kept))
    return model


_METHODS: dict[str, MethodFn] = {
    "naive": naive, "early_stop": early_stop, "confident": confident, "cleanlab": cleanlab_filter,
    "forward": forward, "co_teaching": co_teaching, "divide_mix": divide_mix,
}


def fit_noisy(method: str, model_factory: ModelFactory, X: Features, noisy_targets: Any, *,
              validation: Validation | None = None, seed: int = 0,
              stop_metric: StopMetric = "accuracy",
              **options: Any) -> VerticalModel:
    """Train a vertical model on noisy (hard or soft) targets with a named method (NOISY_METHODS).

    model_factory(seed) returns a new, unfitted model; validation is (X_val, annotated targets),
    never gold labels. stop_metric: what early stopping on the confident rows minimizes (see
    `validation_score`): the error rate by default, since loss on noisy labels favors timid,
    undertrained models.
    options go to the method (e.g. threshold=, forget_rate=, config=).
    Returns the fitted model; `model.info` records what the method did.
    """
    if method not in _METHODS:
        raise KeyError(f"unknown method {method!r}; choose one of {list(NOISY_METHODS)}")
    targets = check_targets(noisy_targets, len(X), "noisy_targets")
    if validation is not None:
        check_targets(validation[1], len(validation[0]), "validation targets")

    def factory(model_seed: int) -> VerticalModel:
        model = model_factory(model_seed)
        model.stop_metric = stop_metric
        return model

    try:
        side = sides(targets)
    except ValueError as err:
        raise ValueError(f"fit_noisy({method!r}): noisy_targets: {err}") from None
    model = _METHODS[method](factory, X, targets, validation=validation, seed=seed, **options)
    model.info["method"] = method
    model.info["classes"] = "rounded at 0.5" if np.array_equal(side, targets >= 0.5) else \
        f"every target on one side of 0.5: the {int(side.sum())} of {len(side)} largest are class 1"
    check_agreement(model, method, X, targets, validation)
    return model


def check_agreement(model: VerticalModel, method: str, X: Features, targets: np.ndarray,
                    validation: Validation | None, alpha: float = 0.05) -> float:
    """Spearman correlation between the model's predictions and the annotator's own labels, on
    the validation rows (the training rows when there are none, or when the validation labels
    are constant); recorded in model.info["annotator_agreement"] with its one-sided p-value.

    A model trained on an annotator's labels should rank the rows as the annotator does, roughly.
    A correlation no larger than chance gives (p >= alpha), or a constant prediction, means the
    method learned nothing or the ranking backwards, or that the annotator's labels are too noisy
    to vouch for any model: RankingDisagreement (a ValueError), rather than a model that may
    quietly score an AUC below 0.5. docs/noisy_labels.md has what the refused models would have scored.
    """
    usable = validation is not None and np.ptp(np.asarray(validation[1], dtype=float)) > 0
    X_check, t_check = validation if validation is not None and usable else (X, targets)
    where = "validation" if usable else "training"
    test = spearmanr(model.predict_proba(X_check), t_check, alternative="greater")
    rho, p_value = float(test.statistic), float(test.pvalue)
    model.info["annotator_agreement"] = {"spearman": round(rho, 4), "p_value": round(p_value, 4),
                                         "rows": where}
    if not p_value < alpha:  # NaN too: the model predicts the same for every row
        raise RankingDisagreement(
            f"fit_noisy({method!r}): the trained model does not rank the {len(t_check)} {where} "
            f"rows as the annotator does (Spearman {rho:.3f}, one-sided p = {p_value:.2g}): "
            "either it learned nothing or the ranking backwards, or the annotator's labels are "
            "too noisy to vouch for any model; it may score below chance. Fix: compare with "
            "method 'naive' on the same labels, see what the method did in the error's "
            ".model.info, and check the model on a few gold-labelled validation rows before "
            "using it (the refused model is the error's .model)", model)
    return rho
