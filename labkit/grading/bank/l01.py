"""Exercises of lesson 01 (zero-shot prompting and calibration)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import logsumexp

from labkit.grading.exercise import Case, Exercise, case, close
from labkit.metrics import TemperatureScaling

# The fields hidden records are drawn from (heart- and Pima-like): column, label, unit, and either
# the words it takes or the range of its numbers.
FIELD_POOL: tuple[tuple[str, str, str, tuple[Any, ...]], ...] = (
    ("Age", "Age", "years", (28, 80)),
    ("Sex", "Sex", "", ("male", "female")),
    ("ChestPainType", "Chest pain type", "", ("typical angina", "atypical angina", "non-anginal pain")),
    ("RestingBP", "Resting systolic blood pressure", "mm Hg", (90, 200)),
    ("Cholesterol", "Serum cholesterol", "mg/dL", (100, 600)),
    ("MaxHR", "Maximum heart rate achieved", "beats/min", (60, 202)),
    ("Oldpeak", "ST depression", "mm", (-2.6, 6.2)),
    ("Glucose", "Plasma glucose", "mg/dL", (44, 199)),
    ("BMI", "Body mass index", "kg/m2", (18.2, 67.1)),
    ("DiabetesPedigreeFunction", "Diabetes pedigree function", "", (0.078, 2.42)),
    ("Bilirubin", "Total bilirubin", "mg/dL", (0.1, 75.0)),
)

# ----- reference solutions -----
def token_probability(logits: np.ndarray, yes_ids: list[int], no_ids: list[int]) -> dict[str, list[float]]:
    """Reference: per row of next-token logits, P(Yes) / (P(Yes) + P(No)) and P(Yes) + P(No), where
    P(Yes) is the softmax mass on every token that spells Yes (log-sum-exp: no overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    total = logsumexp(z, axis=1)
    log_yes, log_no = logsumexp(z[:, list(yes_ids)], axis=1), logsumexp(z[:, list(no_ids)], axis=1)
    both = np.logaddexp(log_yes, log_no)
    return {"p_yes": np.exp(log_yes - both).tolist(), "mass": np.exp(both - total).tolist()}


def _format(value: Any) -> str:
    """A whole number without decimals (148.0 -> "148"), another number with 4 significant digits,
    a string as it is."""
    if isinstance(value, str):
        return value
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:.4g}"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def record_to_text(record: dict[str, Any], fields: list[tuple[str, str, str]]) -> str:
    """Reference: one "Label: value unit" line per field, in the order of `fields`; a field whose
    column is absent, None or NaN is left out; no unit, no trailing space."""
    lines = []
    for column, label, unit in fields:
        value = record.get(column)
        if _is_missing(value):
            continue
        text = _format(value)
        lines.append(f"{label}: {text} {unit}" if unit else f"{label}: {text}")
    return "\n".join(lines)


def reliability_bins(probs: list[float], labels: list[int], n_bins: int = 10) -> dict[str, Any]:
    """Reference: equal-width bins k/n <= p < (k+1)/n (p = 1 in the last bin); per bin the count,
    the mean probability (confidence) and the share of label 1 (frequency), NaN for an empty bin;
    and the ECE, sum over non-empty bins of count/N * |frequency - confidence|."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=float)
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    count, confidence, frequency = [], [], []
    for k in range(n_bins):
        members = index == k
        count.append(int(members.sum()))
        confidence.append(float(p[members].mean()) if members.any() else math.nan)
        frequency.append(float(y[members].mean()) if members.any() else math.nan)
    ece = sum(c / p.size * abs(f - m) for c, m, f in zip(count, confidence, frequency, strict=True) if c)
    return {"count": count, "confidence": confidence, "frequency": frequency, "ece": float(ece)}


def temperature_scale(p_val: list[float], y_val: list[int], p_test: list[float]) -> dict[str, Any]:
    """Reference: the temperature T fitted on the validation split by maximum likelihood
    (probabilities clipped to [1e-6, 1 - 1e-6] before the logit, T in [e^-5, e^5]) and
    sigmoid(logit(p_test) / T): labkit.metrics.TemperatureScaling, which the kit tests by hand."""
    scaler = TemperatureScaling().fit(p_val, y_val)
    return {"temperature": scaler.temperature, "calibrated": scaler.transform(p_test).tolist()}


# ----- hidden cases -----
def _value(rng: np.random.Generator, choices: tuple[Any, ...]) -> Any:
    """A value of one field: a word, a whole number (as int or as 148.0), a decimal with many digits,
    or missing (None / NaN)."""
    if rng.random() < 0.15:
        return None if rng.random() < 0.5 else float("nan")
    if isinstance(choices[0], str):
        return str(rng.choice(choices))
    lo, hi = choices
    kind = rng.choice(["int", "whole float", "decimal"], p=[0.25, 0.2, 0.55])
    if kind == "decimal":
        return float(rng.uniform(lo, hi))
    whole = int(rng.integers(int(lo), int(hi) + 1))
    return whole if kind == "int" else float(whole)


def _hidden_text(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(8):
        chosen = rng.choice(len(FIELD_POOL), size=int(rng.integers(1, len(FIELD_POOL) + 1)), replace=False)
        pool = [FIELD_POOL[i] for i in chosen]
        record = {column: _value(rng, choices) for column, _, _, choices in pool}
        if rng.random() < 0.3:  # a column the record lacks altogether
            record.pop(pool[0][0])
        cases.append(case(record, [[column, label, unit] for column, label, unit, _ in pool]))
    first = FIELD_POOL[:3]
    everything_missing = {column: None for column, _, _, _ in first}
    return [*cases, case(everything_missing, [[column, label, unit] for column, label, unit, _ in first])]


def _off_the_edges(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Move values away from the inner bin edges k/n, where p * n and a search among computed edges
    can disagree by one ulp; for n = 2, 4, 8 the edges are exact binary numbers and stay (they test
    that k/n opens bin k)."""
    if n_bins in (2, 4, 8):
        return p
    edges = np.arange(1, n_bins) / n_bins
    near = np.isclose(p[:, None], edges[None, :], rtol=0, atol=1e-9).any(axis=1)
    return np.where(near, p + 0.003, p)


def _hidden_bins(rng: np.random.Generator) -> list[Case]:
    cases = []
    for number in range(8):
        n_bins = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 10, 12, 15]))
        n = int(rng.integers(1, 120))
        p = rng.beta(0.7, 0.7, size=n)
        if number % 2:  # verbalized-like: two decimals, exact 0 and 1, bin edges
            p = np.round(p, 2)
            p[rng.random(n) < 0.15] = rng.choice([0.0, 1.0, 0.5, 0.25, 0.75])
        p = np.clip(_off_the_edges(p, n_bins), 0.0, 1.0)
        y = (rng.random(n) < p).astype(int) if number != 5 else np.ones(n, dtype=int)  # one class only
        cases.append(case([float(v) for v in p], [int(v) for v in y], n_bins=n_bins))
    # a few records in many bins: most bins are empty and must still be listed
    n_bins = int(rng.integers(10, 16))
    p = rng.choice([0.0, 0.03, 0.42, 0.58, 0.91, 1.0], size=int(rng.integers(2, 6)))
    return [*cases, case([float(v) for v in p], [int(v) for v in rng.integers(0, 2, p.size)], n_bins=n_bins)]


def _overconfident(rng: np.random.Generator, n: int, sharpness: float) -> tuple[list[float], list[int]]:
    """Probabilities sigmoid(sharpness * true logit) with labels drawn from the true probability:
    over-confident for sharpness > 1, timid below 1."""
    true = rng.normal(0.0, 1.5, size=n) + rng.normal(0.0, 0.5)
    y = (rng.random(n) < 1 / (1 + np.exp(-true))).astype(int)
    y[:2] = (0, 1)  # both classes
    p = 1 / (1 + np.exp(-sharpness * true))
    return [float(v) for v in p], [int(v) for v in y]


def _hidden_temperature(rng: np.random.Generator) -> list[Case]:
    cases = []
    for number in range(6):
        sharpness = float(rng.uniform(0.4, 3.0))
        verbalized = number % 3 == 2
        p_val, y_val = _overconfident(rng, int(rng.integers(100 if verbalized else 30, 200)), sharpness)
        p_test, _ = _overconfident(rng, int(rng.integers(3, 40)), sharpness)
        if verbalized:  # two decimals, and a sure answer that is wrong: where the clip matters
            p_val = [round(v, 2) for v in p_val]
            p_val[y_val.index(0)] = 1.0
            p_test = [round(v, 2) for v in p_test] + [0.0, 1.0]
        cases.append(case(p_val, y_val, p_test))
    return cases


def _hidden_token(rng: np.random.Generator) -> list[Case]:
    cases = []
    for scale in (1.0, 3.0, 8.0, 400.0):  # the last: exp() of these logits overflows float64
        vocab, n = int(rng.integers(6, 60)), int(rng.integers(1, 9))
        ids = rng.permutation(vocab)
        k_yes, k_no = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        logits = rng.normal(0, scale, (n, vocab))
        logits[:, ids[:k_yes + k_no]] += scale  # the answers are likely, not certain
        cases.append(case(logits, ids[:k_yes].tolist(), ids[k_yes:k_yes + k_no].tolist()))
    return cases


_EXAMPLE_FIELDS = [["Age", "Age", "years"], ["Sex", "Sex", ""], ["Cholesterol", "Serum cholesterol", "mg/dL"],
                   ["Oldpeak", "ST depression", "mm"], ["MaxHR", "Maximum heart rate achieved", "beats/min"]]

EXERCISES = [
    Exercise(
        id="01.text", function="record_to_text", tier="warm-up", points=1,
        task="record_to_text(record, fields): one 'Label: value unit' line per (column, label, unit) "
             "in fields, in that order; missing values (None, NaN, absent column) left out; whole "
             "numbers without decimals, other numbers as f'{x:.4g}', strings as they are; no unit, "
             "no trailing space; lines joined by newlines.",
        reference=record_to_text,
        examples=(
            case({"Age": 54.0, "Sex": "male", "Cholesterol": float("nan"), "Oldpeak": 1.25, "MaxHR": 150},
                 _EXAMPLE_FIELDS),
            case({"Sex": "female", "Age": 61}, _EXAMPLE_FIELDS[:3]),
        ),
        hidden=_hidden_text,
        compare=close(),
    ),
    Exercise(
        id="01.token", function="token_probability", tier="core", points=2,
        task="token_probability(logits, yes_ids, no_ids): for next-token logits of shape (records, "
             "vocabulary), {'p_yes': P(Yes) / (P(Yes) + P(No)), 'mass': P(Yes) + P(No)} per record as "
             "lists, P(Yes) the softmax probability summed over yes_ids (P(No) over no_ids); finite for "
             "logits in the thousands, where both masses may underflow (work with log-masses).",
        reference=token_probability,
        examples=(case([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 0.5, 0.0]], [0], [1, 2]),),
        hidden=_hidden_token,
        compare=close(rtol=1e-6, atol=1e-9),
    ),
    Exercise(
        id="01.bins", function="reliability_bins", tier="core", points=2,
        task="reliability_bins(probs, labels, n_bins): equal-width bins (k/n <= p < (k+1)/n, p = 1 in "
             "the last); {'count', 'confidence', 'frequency'} as lists over all bins (NaN for an empty "
             "bin's means) and 'ece' = sum over non-empty bins of count/N * |frequency - confidence|.",
        reference=reliability_bins,
        examples=(
            case([0.9, 0.2, 0.7, 0.45, 1.0, 0.3], [1, 0, 0, 1, 1, 0], n_bins=4),
            case([0.05, 0.15, 0.95], [0, 1, 1], n_bins=5),
        ),
        hidden=_hidden_bins,
    ),
    Exercise(
        id="01.temperature", function="temperature_scale", tier="stretch", points=3,
        task="temperature_scale(p_val, y_val, p_test) -> {'temperature': T, 'calibrated': "
             "sigmoid(logit(p_test) / T)}: T minimizes the mean negative log-likelihood of y_val under "
             "sigmoid(logit(p_val) / T), probabilities clipped to [1e-6, 1 - 1e-6], T in [e^-5, e^5]; "
             "to 3 significant digits.",
        reference=temperature_scale,
        examples=(
            case([0.95, 0.9, 0.1, 0.8, 0.3, 0.05, 0.7, 0.2], [1, 0, 0, 1, 1, 0, 0, 0], [0.99, 0.5, 0.1]),
        ),
        hidden=_hidden_temperature,
        compare=close(rtol=1e-3, atol=1e-3),
    ),
]
