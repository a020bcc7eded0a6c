"""Exercises of lesson 02 (vertical models: the supervised upper bound)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from labkit.grading.exercise import Case, Exercise, case, close


def soft_cross_entropy(probs: np.ndarray, targets: np.ndarray) -> float:
    """Reference: mean of -(t log p + (1 - t) log(1 - p)), p clipped to [1e-7, 1 - 1e-7]."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    t = np.asarray(targets, dtype=np.float64)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def soft_label_step(weights: np.ndarray, bias: float, X: np.ndarray, targets: np.ndarray,
                    lr: float) -> tuple[np.ndarray, float]:
    """Reference: one full-batch gradient-descent step of logistic regression on the mean soft
    binary cross-entropy: with p = sigmoid(X w + b), the gradient is X^T (p - t) / n for w and
    mean(p - t) for b (the same form as with 0/1 labels; a row stops pulling where p = t)."""
    X, t = np.asarray(X, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    error = expit(X @ w + bias) - t
    return w - lr * X.T @ error / len(t), float(bias - lr * error.mean())


def cv_auc(X: np.ndarray, y: np.ndarray, k: int = 5, seed: int = 0) -> dict[str, float]:
    """Reference: mean and sample standard deviation of the held-out AUC of a standardized logistic
    regression over stratified k folds; the scaler learns from each fold's training part only (a
    scaler fitted on all rows has seen the held-out part: the leak lesson 02 warns against)."""
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    aucs = []
    for train, test in folds.split(X, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X[train], y[train])
        aucs.append(roc_auc_score(y[test], model.predict_proba(X[test])[:, 1]))
    return {"mean": float(np.mean(aucs)), "std": float(np.std(aucs, ddof=1))}


def percent_of_supervised(runs: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Reference: {dataset: {method: 100 * mean AUC of the method / mean AUC of "supervised"}}."""
    means = runs.groupby(["dataset", "method"])["auc"].mean()
    return {str(d): {str(m): float(100 * means[(d, m)] / means[(d, "supervised")])
                     for m in means[d].index}
            for d in means.index.get_level_values(0).unique()}


# ----- hidden cases -----
def _hidden_soft_ce(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(8):
        n = int(rng.integers(1, 60))
        probs = rng.random(n)
        probs[rng.random(n) < 0.1] = rng.choice([0.0, 1.0])  # sure predictions: the clip matters
        targets = rng.random(n) if rng.random() < 0.5 else rng.integers(0, 2, n).astype(float)
        cases.append(case(probs, targets))
    return cases


def _hidden_soft_step(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        n, d = int(rng.integers(3, 80)), int(rng.integers(1, 7))
        targets = rng.uniform(0.05, 0.95, n)  # soft answers, as an LLM gives them
        cases.append(case(rng.normal(0, 0.5, d), float(rng.normal()), rng.normal(size=(n, d)), targets,
                          float(rng.choice([0.05, 0.3, 1.0]))))
    return cases


def _dataset(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n, d = int(rng.integers(60, 200)), int(rng.integers(2, 6))
    X = rng.normal(size=(n, d))
    logit = X @ rng.normal(size=d) + rng.normal(0, 1.5, n)
    y = (logit > np.quantile(logit, rng.uniform(0.3, 0.7))).astype(int)
    # lab values in their own units: scales from 0.01 to 100 and offsets, as in the tables
    return X * 10 ** rng.uniform(-2, 2, d) + rng.uniform(-50, 50, d), y


def _hidden_cv_auc(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(4):
        X, y = _dataset(rng)
        cases.append(case(X, y, k=int(rng.integers(3, 7)), seed=int(rng.integers(0, 1000))))
    return cases


def _runs(rng: np.random.Generator, datasets: list[str], methods: list[str]) -> pd.DataFrame:
    rows = []
    for d in datasets:
        for m in [*methods, "supervised"]:
            for seed in range(int(rng.integers(1, 6))):
                rows.append({"dataset": d, "method": m, "seed": seed,
                             "auc": float(rng.uniform(0.5, 1.0))})
    order = rng.permutation(len(rows))  # any row order
    return pd.DataFrame([rows[i] for i in order])


def _hidden_percent(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(5):
        datasets = list(rng.choice(["heart", "pima", "hcv", "ilpd", "early_diabetes"],
                                   size=int(rng.integers(1, 4)), replace=False))
        methods = list(rng.choice(["naive", "early_stop", "confident", "co_teaching", "zero_shot"],
                                  size=int(rng.integers(1, 4)), replace=False))
        cases.append(case(_runs(rng, datasets, methods)))
    return cases


_EXAMPLE_RUNS = pd.DataFrame({
    "dataset": ["pima"] * 4 + ["heart"] * 4,
    "method": ["supervised", "supervised", "naive", "naive"] * 2,
    "seed": [0, 1] * 4,
    "auc": [0.80, 0.84, 0.70, 0.74, 0.93, 0.91, 0.90, 0.88],
})

EXERCISES = [
    Exercise(
        id="02.soft_ce",
        function="soft_cross_entropy",
        tier="warm-up",
        points=1,
        task="soft_cross_entropy(probs, targets) returns the mean binary cross-entropy of "
             "predicted probabilities against soft targets in [0, 1], probabilities clipped to "
             "[1e-7, 1 - 1e-7].",
        reference=soft_cross_entropy,
        examples=(case([0.9, 0.2, 0.6], [1.0, 0.0, 0.7]), case([1.0, 0.0], [0.5, 0.5])),
        hidden=_hidden_soft_ce,
    ),
    Exercise(
        id="02.soft_step",
        function="soft_label_step",
        tier="core",
        points=2,
        task="soft_label_step(weights, bias, X, targets, lr) returns (new weights, new bias) after one "
             "full-batch gradient-descent step of logistic regression on the mean binary cross-entropy "
             "against soft targets: gradient X^T (sigmoid(X w + b) - t) / n and mean(sigmoid(X w + b) - t).",
        reference=soft_label_step,
        examples=(case([0.5, -1.0], 0.1, [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], [0.8, 0.3, 0.6], 0.5),),
        hidden=_hidden_soft_step,
        compare=close(rtol=1e-6, atol=1e-9),
    ),
    Exercise(
        id="02.percent",
        function="percent_of_supervised",
        tier="warm-up",
        points=1,
        task="percent_of_supervised(runs) returns {dataset: {method: 100 * mean AUC / mean AUC "
             "of 'supervised'}} from a table with columns dataset, method, seed, auc.",
        reference=percent_of_supervised,
        examples=(case(_EXAMPLE_RUNS),),
        hidden=_hidden_percent,
    ),
    Exercise(
        id="02.cv_auc",
        function="cv_auc",
        tier="stretch",
        points=3,
        task="cv_auc(X, y, k, seed) returns {'mean', 'std'} (sample std) of the held-out AUC of "
             "make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)) fitted on each "
             "training part of StratifiedKFold(k, shuffle=True, random_state=seed).",
        reference=cv_auc,
        examples=(case(*_dataset(np.random.default_rng(2)), k=5, seed=0),),
        hidden=_hidden_cv_auc,
        compare=close(rtol=1e-4, atol=1e-6),
        time_limit_s=60,
    ),
]
