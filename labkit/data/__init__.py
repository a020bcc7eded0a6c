"""The shipped datasets: typed schemas, loading with clear errors, splits, and records as text.

    >>> import labkit.data as d
    >>> ds = d.load("pima")
    >>> print(ds.schema)
    >>> d.to_text(ds.features("train").iloc[0], ds.schema, style="prose")
"""

from labkit.data.loading import LABEL, SPLITS, DataError, Dataset, load, parse
from labkit.data.overview import overview
from labkit.data.registry import SCHEMAS
from labkit.data.schema import Feature, Schema, Task, canonical_code
from labkit.data.text import STYLES, to_text

DATASETS: tuple[str, ...] = tuple(SCHEMAS)
# The five SERVAL tables (Yan et al. 2024) that the kit ships, and the neoplasm text task.
SERVAL_TASKS: tuple[str, ...] = ("heart", "early_diabetes", "ilpd", "hcv", "pima")
TEXT_TASKS: tuple[str, ...] = ("abstracts",)

__all__ = [
    "DATASETS", "LABEL", "SCHEMAS", "SERVAL_TASKS", "SPLITS", "STYLES", "TEXT_TASKS",
    "DataError", "Dataset", "Feature", "Schema", "Task", "canonical_code", "load", "overview", "parse",
    "to_text",
]
