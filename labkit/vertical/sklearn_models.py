"""Logistic regression and gradient boosting (scikit-learn) behind the vertical-model interface.

Neither estimator takes soft targets, so each row enters twice, once per class, weighted by its
target probability (`as_two_classes`): the weighted log loss then equals the soft cross-entropy.

Both run on one thread: on tables of a few hundred rows, OpenMP/BLAS threads spend more time
waiting for each other than computing (docs/noisy_labels.md has the timing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from labkit.data.schema import Schema
from labkit.vertical.base import (
    Features,
    Validation,
    VerticalModel,
    as_two_classes,
    check_targets,
    check_weights,
    validation_score,
)
from labkit.vertical.preprocess import Preprocessor, as_frame


def _two_class_rows(X: np.ndarray, targets: np.ndarray, weights: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, labels, w = as_two_classes(targets, weights)
    if len(np.unique(labels)) < 2:
        raise ValueError("targets hold one class only (all 0 or all 1); a classifier needs both")
    return X[rows], labels, w


class _SklearnModel(VerticalModel):
    """Shared plumbing: schema preprocessing, soft targets, validation checks."""

    def __init__(self, schema: Schema | None, seed: int, scaling: str) -> None:
        super().__init__()
        self.schema = schema
        self.seed = seed
        self.preprocessor = Preprocessor(schema, scaling=scaling, seed=seed)  # type: ignore[arg-type]
        self.estimator: Any = None

    def _prepare(self, X: Features, targets: Any, sample_weight: Any, validation: Validation | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        frame = as_frame(X)
        y = check_targets(targets, len(frame))
        w = check_weights(sample_weight, len(frame))
        inputs = self.preprocessor.fit(frame).flat(frame)
        val = None
        if validation is not None:
            X_val, t_val = validation
            val = (self.preprocessor.flat(X_val), check_targets(t_val, len(X_val), "validation"))
        return inputs, y, w, val

    def fit(self, X: Features, targets: Any, sample_weight: Any = None,
            validation: Validation | None = None) -> _SklearnModel:
        with threadpool_limits(1):
            return self._fit(X, targets, sample_weight, validation)

    def _fit(self, X: Features, targets: Any, sample_weight: Any,
             validation: Validation | None) -> _SklearnModel:
        raise NotImplementedError

    def predict_proba(self, X: Features) -> np.ndarray:
        if self.estimator is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X, targets) first")
        with threadpool_limits(1):
            return self.estimator.predict_proba(self.preprocessor.flat(X))[:, 1]


class LogisticModel(_SklearnModel):
    """L2-regularized logistic regression; with validation, C is chosen on it."""

    name = "logistic"

    def __init__(self, schema: Schema | None = None, *, C: float = 1.0,
                 C_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0), seed: int = 0) -> None:
        super().__init__(schema, seed, scaling="quantile")
        self.C = C
        self.C_grid = C_grid

    def _fit(self, X: Features, targets: Any, sample_weight: Any,
             validation: Validation | None) -> LogisticModel:
        inputs, y, w, val = self._prepare(X, targets, sample_weight, validation)
        rows, labels, weights = _two_class_rows(inputs, y, w)
        grid = self.C_grid if val is not None else (self.C,)
        best: tuple[float, float, LogisticRegression] | None = None
        for C in grid:
            estimator = LogisticRegression(C=C, max_iter=5000).fit(rows, labels,
                                                                   sample_weight=weights)
            loss = (validation_score(estimator.predict_proba(val[0])[:, 1], val[1],
                                     self.stop_metric) if val else 0.0)
            if best is None or loss < best[0]:
                best = (loss, C, estimator)
        assert best is not None
        self.estimator = best[2]
        self.info = {"C": best[1], **({"val_score": best[0]} if val else {})}
        return self


class BoostingModel(_SklearnModel):
    """Histogram gradient boosting; with validation, the number of trees is chosen on it."""

    name = "boosting"

    def __init__(self, schema: Schema | None = None, *, max_iter: int = 200,
                 learning_rate: float = 0.05, max_leaf_nodes: int = 15, min_samples_leaf: int = 10,
                 l2_regularization: float = 1.0, seed: int = 0) -> None:
        super().__init__(schema, seed, scaling="standard")
        self.params = dict(learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes,
                           min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization)
        self.max_iter = max_iter

    def _estimator(self, max_iter: int) -> HistGradientBoostingClassifier:
        # early_stopping=False: the internal random split would make results depend on row order.
        return HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False,
                                              random_state=self.seed, **self.params)

    def _fit(self, X: Features, targets: Any, sample_weight: Any,
             validation: Validation | None) -> BoostingModel:
        inputs, y, w, val = self._prepare(X, targets, sample_weight, validation)
        rows, labels, weights = _two_class_rows(inputs, y, w)
        estimator = self._estimator(self.max_iter).fit(rows, labels, sample_weight=weights)
        self.info = {"n_trees": self.max_iter}
        if val is not None:
            losses = [validation_score(p[:, 1], val[1], self.stop_metric)
                      for p in estimator.staged_predict_proba(val[0])]
            best = int(np.argmin(losses)) + 1
            if best < self.max_iter:
                estimator = self._estimator(best).fit(rows, labels, sample_weight=weights)
            self.info = {"n_trees": best, "val_score": float(min(losses))}
        self.estimator = estimator
        return self
