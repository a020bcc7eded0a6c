"""Turning a feature frame into model inputs, following the dataset schema.

Everything here is fitted on the training split only (medians, quantiles, category levels) and then
applied unchanged to validation and test rows, so no statistic of a test row leaks into training.

- numeric: missing values (NaN; `zero_is_missing` zeros as well) are imputed with the training
  median, and a 0/1 missing-indicator column is added when the training split has missing values
  (in medicine "not measured" often carries information: a test is ordered when it is suspected).
  Then a quantile transform to a normal shape (robust to the heavy tails of lab values, as in
  Gorishniy et al. 2021) or a standard scaler.
- binary / categorical: levels come from the schema's codes (else from the training values);
  code 0 stands for "missing or unseen". Flat inputs get one-hot columns (one 0/1 column for a
  binary feature); the FT-Transformer gets the integer codes for its embeddings.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.preprocessing import QuantileTransformer, StandardScaler

from labkit.data.schema import Feature, Schema, canonical_code

Scaling = Literal["quantile", "standard"]


def as_frame(X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
    """A DataFrame view of the input; a 2-D array becomes columns x0, x1, ..."""
    if isinstance(X, pd.DataFrame):
        return X
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(f"X must be a DataFrame or a 2-D array; got an array of shape {array.shape}")
    return pd.DataFrame(array, columns=[f"x{i}" for i in range(array.shape[1])])


@dataclass
class _Categorical:
    """The fitted levels of one binary/categorical column."""

    feature: Feature
    levels: list[str]
    indicator: bool  # the training split had missing values: flat inputs get a missing column

    def codes(self, column: pd.Series) -> np.ndarray:
        """0 for missing or unseen values, 1..k for the levels; unseen values are reported."""
        index = {level: i + 1 for i, level in enumerate(self.levels)}
        values = [canonical_code(v) for v in column]
        unseen = sorted({v for v in values if v is not None and v not in index})
        if unseen:
            warnings.warn(
                f"feature {self.feature.name!r}: {sum(v in unseen for v in values)} value(s) "
                f"{unseen[:5]} not seen in training (levels {self.levels}); treated as missing",
                stacklevel=3,
            )
        return np.array([index.get(v, 0) if v is not None else 0 for v in values], dtype=np.int64)

    def one_hot(self, codes: np.ndarray) -> np.ndarray:
        """One-hot columns; a binary feature is one 0/1 column for its second level."""
        if self.feature.kind == "binary" and len(self.levels) == 2:
            columns = [(codes == 2).astype(np.float32)]
        else:
            columns = [(codes == i + 1).astype(np.float32) for i in range(len(self.levels))]
        if self.indicator:
            columns.append((codes == 0).astype(np.float32))
        return np.stack(columns, axis=1)


class Preprocessor:
    """Schema-driven preprocessing, fitted on the training split (see the module docstring).

    schema: the dataset schema; None means "every column is numeric" (synthetic data, arrays).
    scaling: "quantile" (default; normal-shaped output) or "standard".
    """

    def __init__(self, schema: Schema | None = None, scaling: Scaling = "quantile",
                 seed: int = 0) -> None:
        if scaling not in ("quantile", "standard"):
            raise ValueError(f"scaling must be 'quantile' or 'standard', not {scaling!r}")
        self.schema = schema
        self.scaling: Scaling = scaling
        self.seed = seed
        self.features: list[Feature] = []
        self.medians: dict[str, float] = {}
        self.indicators: list[str] = []
        self.categoricals: list[_Categorical] = []
        self.scaler: QuantileTransformer | StandardScaler | None = None

    # ----- fitting -----
    def fit(self, X: pd.DataFrame | np.ndarray) -> Preprocessor:
        """Learn medians, scales and levels from the training rows."""
        frame = as_frame(X)
        self.features = self._features(frame)
        numeric = [f for f in self.features if f.kind == "numeric"]
        raw = self._numeric_raw(frame, numeric)
        self.medians = {}
        for f in numeric:
            median = raw[f.name].median()
            # A column with no value at all in training: impute 0 and let the indicator speak.
            self.medians[f.name] = float(median) if pd.notna(median) else 0.0
        self.indicators = [f.name for f in numeric if raw[f.name].isna().any()]
        self.categoricals = [self._fit_categorical(f, frame[f.name])
                             for f in self.features if f.kind != "numeric"]
        self.scaler = None
        if numeric:
            values = raw.fillna(self.medians).to_numpy(dtype=np.float64)
            self.scaler = (
                QuantileTransformer(output_distribution="normal", random_state=self.seed,
                                    n_quantiles=max(2, min(1000, len(values))))
                if self.scaling == "quantile" else StandardScaler()
            ).fit(values)
        return self

    def _features(self, frame: pd.DataFrame) -> list[Feature]:
        if self.schema is None:
            return [Feature(str(c), str(c)) for c in frame.columns]
        names = self.schema.feature_names
        absent = [n for n in names if n not in frame.columns]
        if absent:
            raise ValueError(f"{self.schema.name}: feature column(s) {absent} missing from X; pass "
                             f"the frame from ds.features(split) (columns {names})")
        extra = [c for c in frame.columns if c not in names]
        if extra:
            # A stray column is often the target: refusing it prevents training on the answer.
            raise ValueError(f"{self.schema.name}: X has column(s) {extra} that are not features of "
                             "the schema; pass ds.features(split), not ds.frame or ds.split(split)")
        text = [f.name for f in self.schema.features if f.kind == "text"]
        if text:
            raise ValueError(f"{self.schema.name}: feature(s) {text} are text; use "
                             "labkit.vertical.TextClassifier for text datasets")
        return list(self.schema.features)

    def _numeric_raw(self, frame: pd.DataFrame, numeric: list[Feature]) -> pd.DataFrame:
        out = {}
        for f in numeric:
            values = pd.to_numeric(frame[f.name], errors="coerce")
            bad = values.isna() & frame[f.name].notna()
            if bad.any():
                examples = frame[f.name][bad].astype(str).unique()[:3].tolist()
                raise ValueError(f"feature {f.name!r} is numeric but holds {int(bad.sum())} "
                                 f"non-numbers such as {examples}; fix the data or the schema kind")
            if f.zero_is_missing:
                values = values.mask(values == 0)
            out[f.name] = values.astype(float)
        return pd.DataFrame(out, index=frame.index)

    def _fit_categorical(self, feature: Feature, column: pd.Series) -> _Categorical:
        seen = sorted({c for c in (canonical_code(v) for v in column) if c is not None})
        levels = [canonical_code(k) or k for k in feature.codes] if feature.codes else seen
        if feature.kind == "binary" and len(levels) > 2:
            raise ValueError(f"feature {feature.name!r} is binary but has levels {levels}; "
                             "mark it categorical in the schema")
        return _Categorical(feature, levels, bool(column.isna().any()))

    # ----- transforming -----
    def _frame(self, X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """The input as a frame, checked against the columns seen in fit."""
        if not self.features:
            raise RuntimeError("Preprocessor is not fitted: call fit(train_features) first")
        frame = as_frame(X)
        if self.schema is not None:
            self._features(frame)
        elif list(map(str, frame.columns)) != [f.name for f in self.features]:
            raise ValueError(f"X has columns {list(frame.columns)}, but the preprocessor was fitted "
                             f"on {[f.name for f in self.features]}")
        return frame

    def numeric(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Scaled numeric columns followed by their missing indicators (float32, n x d)."""
        frame = self._frame(X)
        numeric = [f for f in self.features if f.kind == "numeric"]
        raw = self._numeric_raw(frame, numeric)
        blocks = []
        if self.scaler is not None:
            blocks.append(self.scaler.transform(raw.fillna(self.medians).to_numpy(np.float64)))
        if self.indicators:
            blocks.append(raw[self.indicators].isna().to_numpy(np.float64))
        if not blocks:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def codes(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Integer codes of the binary/categorical columns (0 = missing or unseen), n x k."""
        frame = self._frame(X)
        if not self.categoricals:
            return np.zeros((len(frame), 0), dtype=np.int64)
        return np.stack([c.codes(frame[c.feature.name]) for c in self.categoricals], axis=1)

    @property
    def cardinalities(self) -> list[int]:
        """Number of codes per categorical column, including code 0."""
        return [len(c.levels) + 1 for c in self.categoricals]

    def flat(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """One float matrix: numeric block, then one-hot blocks (for the MLP and scikit-learn)."""
        codes = self.codes(X)
        blocks = [self.numeric(X)] + [c.one_hot(codes[:, i]) for i, c in enumerate(self.categoricals)]
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def flat_names(self) -> list[str]:
        """Column names of `flat`, for inspecting coefficients and importances."""
        names = [f.name for f in self.features if f.kind == "numeric"]
        names += [f"{n}_missing" for n in self.indicators]
        for c in self.categoricals:
            levels = c.levels[1:] if c.feature.kind == "binary" and len(c.levels) == 2 else c.levels
            names += [f"{c.feature.name}={level}" for level in levels]
            names += [f"{c.feature.name}_missing"] if c.indicator else []
        return names

    @property
    def n_numeric(self) -> int:
        """Width of the numeric block (scaled columns plus indicators)."""
        n = sum(f.kind == "numeric" for f in self.features)
        return n + len(self.indicators)
