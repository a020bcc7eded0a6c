"""Synthetic patients: records with the columns and codes of a shipped data set, drawn from
plausible clinical ranges written in data/knowledge/<task>.yaml (never from the data set itself).

A patient has a latent severity z ~ N(0, 1); a feature with a `load` moves with z (sick patients
tend to have several abnormal values at once), the rest of its spread is independent noise.
Feature spec keys:
  dist: normal (mean, sd) | lognormal (median, sigma) | poisson (mean) | choice (probs)
  min, max: clip; decimals: rounding (-3 rounds to thousands); missing: probability of NaN
  load: correlation with z; tilt: {code: log-odds per unit of z} for choices; zero: P(value = 0)
  same_as, factor, power, noise: a value derived from an earlier feature (base**power * factor)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from labkit.data.schema import Schema
from labkit.pocket.knowledge import KnowledgeError, TaskKnowledge

DEFAULT_MISSING = 0.02
# A few records lose many features at once, as real records with whole panels not done.
SPARSE_RECORD_RATE, SPARSE_DROP = 0.15, 0.3


def check_spec(knowledge: TaskKnowledge, schema: Schema) -> None:
    """The spec covers exactly the schema's features, with the schema's codes."""
    spec, names = knowledge.patients, schema.feature_names
    missing = [n for n in names if n not in spec]
    extra = [n for n in spec if n not in names]
    if missing or extra:
        raise KnowledgeError(
            f"data/knowledge/{knowledge.task}.yaml: patients must list the columns of "
            f"{schema.name!r}; missing {missing}, unknown {extra}"
        )
    for f in schema.features:
        probs = spec[f.name].get("probs")
        if probs is not None and f.codes and not set(map(str, probs)) <= set(f.codes):
            raise KnowledgeError(
                f"data/knowledge/{knowledge.task}.yaml: {f.name} codes {sorted(map(str, probs))} "
                f"are not the schema's codes {sorted(f.codes)}"
            )


def sample_patients(
    knowledge: TaskKnowledge, schema: Schema, n: int, rng: np.random.Generator
) -> list[dict[str, Any]]:
    """n synthetic records (column -> value; NaN or None when missing), in the data set's coding."""
    check_spec(knowledge, schema)
    z = rng.standard_normal(n)
    columns: dict[str, np.ndarray] = {}
    for name, spec in knowledge.patients.items():
        columns[name] = _draw(name, spec, z, columns, rng)
        if schema.feature(name).kind == "numeric" and columns[name].dtype == object:
            columns[name] = columns[name].astype(float)  # a count drawn as a choice, e.g. 0-3
    sparse = rng.random(n) < SPARSE_RECORD_RATE
    for name, values in columns.items():
        drop = rng.random(n) < spec_missing(knowledge.patients[name])
        drop |= sparse & (rng.random(n) < SPARSE_DROP)
        if values.dtype == object:
            values[drop] = None
        else:
            values[drop] = np.nan
    return [{name: _plain(columns[name][i]) for name in schema.feature_names} for i in range(n)]


def spec_missing(spec: dict[str, Any]) -> float:
    return float(spec.get("missing", DEFAULT_MISSING))


def _plain(value: Any) -> Any:
    """numpy scalars -> Python (to_text formats Python floats)."""
    return value.item() if isinstance(value, np.generic) else value


def _draw(
    name: str, spec: dict[str, Any], z: np.ndarray, done: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    n = len(z)
    if "same_as" in spec:
        base = done[spec["same_as"]].astype(float)
        noise = np.exp(float(spec.get("noise", 0.0)) * rng.standard_normal(n))
        values = base ** float(spec.get("power", 1.0)) * float(spec.get("factor", 1.0)) * noise
        return _round(values, spec)
    dist = spec.get("dist")
    load = float(spec.get("load", 0.0))
    mixed = load * z + math.sqrt(max(1.0 - load**2, 0.0)) * rng.standard_normal(n)
    if dist == "choice":
        return _choice(spec, z, rng)
    if dist == "normal":
        values = float(spec["mean"]) + float(spec["sd"]) * mixed
    elif dist == "lognormal":
        values = float(spec["median"]) * np.exp(float(spec["sigma"]) * mixed)
    elif dist == "poisson":
        values = rng.poisson(float(spec["mean"]), n).astype(float)
    else:
        raise KnowledgeError(f"patients.{name}: unknown dist {dist!r}")
    if "zero" in spec:
        values[rng.random(n) < float(spec["zero"])] = 0.0
    return _round(values, spec)


def _round(values: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    low, high = float(spec.get("min", -np.inf)), float(spec.get("max", np.inf))
    return np.round(np.clip(values, low, high), int(spec.get("decimals", 0)))


def _choice(spec: dict[str, Any], z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    codes = [str(c) for c in spec["probs"]]
    base = np.log(np.array([float(p) for p in spec["probs"].values()]))
    tilt = np.array([float(spec.get("tilt", {}).get(c, 0.0)) for c in codes])
    logits = base[None, :] + z[:, None] * tilt[None, :]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    # inverse-CDF sampling, vectorized over patients
    picks = (rng.random(len(z))[:, None] > probs.cumsum(axis=1)).sum(axis=1)
    return np.array(codes, dtype=object)[np.minimum(picks, len(codes) - 1)]
