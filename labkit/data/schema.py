"""Typed descriptions of the shipped datasets: what each column means and what the task is."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

FeatureKind = Literal["numeric", "binary", "categorical", "text"]


def is_missing(value: object) -> bool:
    """None and NaN mean "not measured"."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def canonical_code(value: object) -> str | None:
    """The one spelling of a category code, wherever the value comes from (a CSV cell, a frame, a
    knowledge rule): "1", "1.0", 1 and 1.0 are the code "1", "0.50" is "0.5", text loses its outer
    spaces ("M " is "M"); None and NaN are missing (None)."""
    if is_missing(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value).strip()
    return f"{number:g}" if math.isfinite(number) else str(value).strip()


@dataclass(frozen=True)
class Feature:
    """One input column.

    name: the column in the CSV. label: how a clinician would name it. unit: "" when unitless.
    codes: for binary/categorical columns, the CSV value -> words used in text
    (e.g. {"M": "male", "F": "female"}). missing: CSV strings that mean "not measured";
    zero_is_missing: a 0 in this column means "not measured" (e.g. Pima's Glucose).
    """

    name: str
    label: str
    kind: FeatureKind = "numeric"
    unit: str = ""
    description: str = ""
    codes: dict[str, str] = field(default_factory=dict)
    zero_is_missing: bool = False


@dataclass(frozen=True)
class Task:
    """The binary prediction task of a dataset.

    target: the CSV column. positive / negative: the CSV values of label 1 / label 0; excluded: values
    whose rows are left out (with the reason in `why`). statement: the claim the LLM is asked about,
    e.g. "this patient has diabetes". why: the reason for this binarization, with its source.
    """

    target: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    positive_name: str
    negative_name: str
    statement: str
    why: str
    excluded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schema:
    """A dataset: its file, its columns, its task, and where it comes from.

    drop: file columns that are not features (ids, outcome-dependent columns); rename: file column ->
    feature name.
    """

    name: str
    title: str
    file: str
    kind: Literal["tabular", "text"]
    features: tuple[Feature, ...]
    task: Task
    n_rows: int  # rows and columns of the file
    n_columns: int
    class_counts: dict[int, int]  # label -> rows, after excluded rows are left out
    source: str
    license: str
    citation: str
    drop: tuple[str, ...] = ()
    rename: dict[str, str] = field(default_factory=dict)
    na_values: tuple[str, ...] = ("", "NA", "?")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"{self.name}: no feature {name!r}; features are {self.feature_names}")

    def __str__(self) -> str:
        lines = [
            f"{self.title} ({self.name}): {self.n_rows} rows, file data/datasets/{self.file}",
            f"task: {self.task.statement}  [label 1 = {self.task.positive_name}, "
            f"0 = {self.task.negative_name}; {self.task.target} in {list(self.task.positive)}]",
            f"class counts: {self.class_counts}",
            "features:",
        ]
        for f in self.features:
            unit = f" [{f.unit}]" if f.unit else ""
            missing = "  (0 = missing)" if f.zero_is_missing else ""
            codes = f"  codes {f.codes}" if f.codes else ""
            lines.append(f"  {f.name:<28} {f.kind:<11} {f.label}{unit}{missing}{codes}")
        lines.append(f"license: {self.license}; source: {self.source}")
        return "\n".join(lines)
