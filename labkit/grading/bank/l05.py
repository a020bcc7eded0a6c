"""Exercises of lesson 05 (the SERVAL loop)."""

from __future__ import annotations

import math

import numpy as np

from labkit.grading.exercise import Case, Exercise, case


def agreement(p_llm: list[float], p_vertical: list[float]) -> float:
    """Reference: the share of rows where both predict the same class (p >= 0.5 is class 1)."""
    a, b = np.asarray(p_llm) >= 0.5, np.asarray(p_vertical) >= 0.5
    return float(np.mean(a == b))


def gap_closed(before: float, after: float, target: float) -> float:
    """Reference: the share of the gap to the target that was closed, (after - before) / (target - before);
    NaN when there was no gap (target == before)."""
    if target == before:
        return math.nan
    return (after - before) / (target - before)


def summarize_run(records: list[dict[str, float]], supervised_auc: float) -> dict[str, float]:
    """Reference: best_iteration (highest vertical_auc; the earliest on ties), llm_gain (last minus
    first llm_auc) and pct_of_supervised (100 * best vertical_auc / supervised_auc)."""
    best = max(records, key=lambda r: (r["vertical_auc"], -r["iteration"]))
    return {"best_iteration": int(best["iteration"]),
            "llm_gain": float(records[-1]["llm_auc"] - records[0]["llm_auc"]),
            "pct_of_supervised": float(100 * best["vertical_auc"] / supervised_auc)}


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
        cases.append(case(records, float(np.round(rng.uniform(0.8, 0.98), 3))))
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
        id="05.gap", function="gap_closed", tier="core", points=2,
        task="gap_closed(before, after, target): (after - before) / (target - before), NaN when "
             "target == before.",
        reference=gap_closed,
        examples=(case(0.70, 0.76, 0.88), case(0.8, 0.78, 0.9)),
        hidden=_hidden_gap,
    ),
    Exercise(
        id="05.summary", function="summarize_run", tier="stretch", points=3,
        task="summarize_run(records, supervised_auc) -> {'best_iteration', 'llm_gain', "
             "'pct_of_supervised'} from per-iteration records with iteration, llm_auc, vertical_auc.",
        reference=summarize_run,
        examples=(case([{"iteration": 1, "llm_auc": 0.71, "vertical_auc": 0.80},
                        {"iteration": 2, "llm_auc": 0.76, "vertical_auc": 0.83}], 0.86),),
        hidden=_hidden_summary,
    ),
]
