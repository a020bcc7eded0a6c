"""Exercises of lesson 05 (the SERVAL loop)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from labkit import guard
from labkit.grading.exercise import Case, Exercise, case, close


def agreement(p_llm: list[float], p_vertical: list[float]) -> float:
    """Reference: the share of rows where both predict the same class (p >= 0.5 is class 1)."""
    a, b = np.asarray(p_llm) >= 0.5, np.asarray(p_vertical) >= 0.5
    return float(np.mean(a == b))


def serval_round(llm_logits: list[float], X: list[list[float]], fit_steps: int, tune_steps: int,
                 lr: float) -> dict[str, list[float]]:
    """Reference: one round of the loop with a toy LLM that holds one logit per row.
    1. annotate: labels p = sigmoid(llm_logits);
    2. the vertical model, a logistic regression (weights and bias from 0), takes `fit_steps`
       full-batch gradient steps on the mean soft cross-entropy against p (lesson 02's step);
       its probabilities on the rows are t;
    3. back-tune: each row's logit takes `tune_steps` steps z_i <- z_i - lr * (sigmoid(z_i) - t_i),
       the gradient of that row's soft cross-entropy against t_i, from the LLM's logits.
    Returns {"labels": p, "vertical": t, "llm": the back-tuned logits}."""
    z = np.asarray(llm_logits, dtype=np.float64)
    features = np.asarray(X, dtype=np.float64)
    labels = expit(z)
    weights, bias = np.zeros(features.shape[1]), 0.0
    for _ in range(fit_steps):
        error = expit(features @ weights + bias) - labels
        weights, bias = weights - lr * features.T @ error / len(z), bias - lr * error.mean()
    taught = expit(features @ weights + bias)
    for _ in range(tune_steps):
        z = z - lr * (expit(z) - taught)
    return {"labels": labels.tolist(), "vertical": taught.tolist(), "llm": z.tolist()}


def gap_closed(before: float, after: float, target: float) -> float:
    """Reference: the share of the gap to the target that was closed, (after - before) / (target - before);
    NaN when there was no gap (target == before)."""
    if target == before:
        return math.nan
    return (after - before) / (target - before)


def summarize_run(records: list[dict[str, float]], llm_final_auc: float,
                  supervised_auc: float) -> dict[str, float]:
    """Reference: a run's line of the results table, as labkit.serval.ServalResult.row computes it
    for a run without the guard (ServalConfig.val_labels = 0) whose vertical models were all accepted.
    llm_gain: the LLM after the last back-tuning (llm_final_auc) minus the zero-shot LLM (the first
    record's llm_auc); vertical_auc: the last iteration's (the run has no label to pick another
    by: picking the best by test AUC would select on the test split); pct_of_supervised: 100 *
    that AUC / supervised_auc."""
    vertical = float(records[-1]["vertical_auc"])
    return {"llm_gain": float(llm_final_auc - records[0]["llm_auc"]), "vertical_auc": vertical,
            "pct_of_supervised": 100 * vertical / supervised_auc}


def auc_change_interval(labels: list[int], p_best: list[float], p_new: list[float],
                        draws: list[list[int]]) -> list[float]:
    """Reference: [change, low, high]: AUC(p_new) - AUC(p_best) on the rows, and the 2.5% and 97.5%
    percentiles (numpy's default, linear) of that change over the resamples `draws` (each a list
    of row indices), both scored on the same resampled rows; a resample holding one class only is
    left out. labkit.guard.change_interval."""
    change, low, high = guard.change_interval(np.asarray(labels), np.asarray(p_best, dtype=float),
                                              np.asarray(p_new, dtype=float), np.asarray(draws))
    return [float(change), low, high]


def _hidden_agreement(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        n = int(rng.integers(1, 40))
        cases.append(case([float(x) for x in rng.random(n)], [float(x) for x in rng.random(n)]))
    return cases + [case([0.5, 0.49], [0.5, 0.51])]


def _hidden_gap(rng: np.random.Generator) -> list[Case]:
    cases = [case(0.7, 0.75, 0.7)]
    for _ in range(8):
        before, after, target = (float(x) for x in np.round(rng.uniform(0.5, 1.0, size=3), 3))
        cases.append(case(before, after, target))
    return cases


def _hidden_summary(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(6):
        n = int(rng.integers(1, 5))
        aucs = np.round(rng.uniform(0.6, 0.95, size=(n, 2)), 2)
        records = [{"iteration": i + 1, "llm_auc": float(a), "vertical_auc": float(v)}
                   for i, (a, v) in enumerate(aucs)]
        cases.append(case(records, float(np.round(rng.uniform(0.6, 0.95), 3)),
                          float(np.round(rng.uniform(0.8, 0.98), 3))))
    # the best iteration is not the last; the final back-tuning moved the LLM again
    cases.append(case([{"iteration": 1, "llm_auc": 0.70, "vertical_auc": 0.84},
                       {"iteration": 2, "llm_auc": 0.74, "vertical_auc": 0.81}], 0.72, 0.90))
    return cases


def _hidden_change(rng: np.random.Generator) -> list[Case]:
    cases = []
    for n, noise in ((12, 0.05), (30, 0.1), (50, 0.02), (9, 0.3)):
        labels = rng.permutation([1] * (n // 3) + [0] * (n - n // 3))
        best = np.clip(0.5 + 0.25 * (labels - 0.5) + 0.2 * rng.standard_normal(n), 0, 1)
        new = np.clip(best + noise * rng.standard_normal(n), 0, 1)  # a state close to the best: paired
        draws = rng.integers(0, n, size=(200, n))
        draws[:3] = np.flatnonzero(labels == 0)[0]  # resamples of one class only: left out
        cases.append(case([int(x) for x in labels], [round(float(x), 3) for x in best],
                          [round(float(x), 3) for x in new], draws.tolist()))
    return cases


def _hidden_round(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(5):
        n, d = int(rng.integers(5, 60)), int(rng.integers(1, 6))
        X = rng.normal(size=(n, d))
        logits = X @ rng.normal(size=d) + rng.normal(0, 1.5, n)  # a rule, and slips on single rows
        cases.append(case(logits.tolist(), X.tolist(), int(rng.integers(1, 40)), int(rng.integers(1, 6)),
                          float(rng.choice([0.1, 0.5, 1.0]))))
    return cases


EXERCISES = [
    Exercise(
        id="05.agreement", function="agreement", tier="warm-up", points=1,
        task="agreement(p_llm, p_vertical): the share of rows where both predict the same class "
             "(p >= 0.5 is class 1).",
        reference=agreement,
        examples=(case([0.9, 0.2, 0.6, 0.4], [0.8, 0.7, 0.55, 0.1]),),
        hidden=_hidden_agreement,
    ),
    Exercise(
        id="05.round", function="serval_round", tier="core", points=2,
        task="serval_round(llm_logits, X, fit_steps, tune_steps, lr) -> {'labels', 'vertical', 'llm'}: "
             "labels p = sigmoid(llm_logits); a logistic regression from zero weights and bias takes "
             "fit_steps gradient steps (mean soft cross-entropy against p), its probabilities are t; "
             "each logit takes tune_steps steps z <- z - lr * (sigmoid(z) - t).",
        reference=serval_round,
        examples=(case([2.0, -1.0, 0.5, -0.3], [[1.0, 0.5], [-1.0, 0.2], [0.3, -0.4], [-0.2, -1.0]],
                       3, 2, 0.5),),
        hidden=_hidden_round,
        compare=close(rtol=1e-6, atol=1e-9),
    ),
    Exercise(
        id="05.gap", function="gap_closed", tier="core", points=2,
        task="gap_closed(before, after, target): (after - before) / (target - before), NaN when "
             "target == before.",
        reference=gap_closed,
        examples=(case(0.70, 0.76, 0.88), case(0.8, 0.78, 0.9)),
        hidden=_hidden_gap,
    ),
    Exercise(
        id="05.summary", function="summarize_run", tier="core", points=2,
        task="summarize_run(records, llm_final_auc, supervised_auc) -> {'llm_gain', "
             "'vertical_auc', 'pct_of_supervised'}: the LLM after the last back-tuning minus the "
             "zero-shot LLM, the last iteration's vertical AUC (never the best by test AUC) and "
             "100 * it / supervised_auc.",
        reference=summarize_run,
        examples=(case([{"iteration": 1, "llm_auc": 0.71, "vertical_auc": 0.80},
                        {"iteration": 2, "llm_auc": 0.76, "vertical_auc": 0.83}], 0.78, 0.86),),
        hidden=_hidden_summary,
    ),
    Exercise(
        id="05.change", function="auc_change_interval", tier="stretch", points=3,
        task="auc_change_interval(labels, p_best, p_new, draws) -> [change, low, high]: AUC(p_new) - "
             "AUC(p_best), and the 2.5% and 97.5% percentiles of that change over the resampled rows "
             "(both states on the same draw; draws with one class only left out).",
        reference=auc_change_interval,
        examples=(case([1, 0, 1, 0, 0, 1], [0.9, 0.2, 0.6, 0.4, 0.3, 0.7], [0.8, 0.3, 0.4, 0.5, 0.2, 0.9],
                       [[0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 2, 3], [1, 3, 4, 1, 3, 4], [5, 4, 3, 2, 1, 0],
                        [2, 2, 3, 3, 4, 5]]),),
        hidden=_hidden_change,
    ),
]
