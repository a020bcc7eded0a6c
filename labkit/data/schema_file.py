"""A dataset described by files: a CSV and, beside it, a schema in YAML (docs/teaching.md, "Add
your own task"). Every shipped dataset is one (data/datasets/<name>.yaml); a teacher's new table is
one more, and `labkit.data.load(path)` and `labkit data check PATH` read it like a shipped one.

The YAML's fields are those of `labkit.data.schema.Schema`, its `task` those of `Task`, each entry
of `features` those of `Feature`; the shipped files are the examples. Category codes may be
written as numbers or strings (1, 1.0 and "1" are the code "1"). Every mistake is reported with
the file, the field and the fix.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import yaml

from labkit.data.schema import Feature, FeatureKind, Schema, Task, canonical_code

SUFFIXES = (".yaml", ".yml")
KINDS: tuple[str, ...] = typing.get_args(FeatureKind)


class SchemaError(ValueError):
    """A schema file that cannot describe a dataset: names the file, the field and the fix."""


def schema_path(path: Path) -> Path:
    """The schema file of a dataset given as its YAML file or its folder (which must hold exactly one)."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
        if len(found) != 1:
            raise SchemaError(f"{path}: a dataset folder holds one schema file (<name>.yaml) beside its "
                              f"CSV; found {len(found)}: {[p.name for p in found]}")
        return found[0]
    if path.suffix not in SUFFIXES or not path.is_file():
        raise SchemaError(f"{path}: no such schema file; give a dataset's <name>.yaml or its folder")
    return path


def read_schema(path: Path) -> Schema:
    """The Schema a YAML file describes (its `file` is relative to the YAML's folder)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SchemaError(f"{path}: not valid YAML ({err})") from err
    where = _Where(path)
    top = where.mapping(raw, "", Schema)
    task = where.mapping(top.pop("task"), "task", Task)
    for key in ("positive", "negative", "excluded"):
        if key in task:
            task[key] = tuple(where.codes(task[key], f"task.{key}"))
    features = top.pop("features")
    if not isinstance(features, list) or not features:
        raise where.error("features", "should be a list with one entry per feature column")
    for key in ("drop", "na_values"):
        if key in top:
            top[key] = tuple(map(str, top[key]))
    if "class_counts" in top:
        counts = where.mapping(top["class_counts"], "class_counts", None)
        if set(map(str, counts)) != {"0", "1"}:
            raise where.error("class_counts", "should give the rows of label 0 and of label 1, "
                                              "e.g. {0: 500, 1: 268}")
        top["class_counts"] = {int(k): int(v) for k, v in counts.items()}
    parsed = tuple(_feature(where, entry, f"features[{i}]") for i, entry in enumerate(features))
    return Schema(**top, task=Task(**task), features=parsed)


def _feature(where: _Where, entry: Any, name: str) -> Feature:
    feature = where.mapping(entry, name, Feature)
    kind = feature.get("kind", "numeric")
    if kind not in KINDS:
        raise where.error(f"{name}.kind", f"{kind!r} is not one of {list(KINDS)}")
    if kind in ("binary", "categorical") and not feature.get("codes"):
        raise where.error(f"{name}.codes", f"a {kind} feature needs its codes: the CSV value -> the words "
                                           "used in text")
    if "codes" in feature:
        codes = where.mapping(feature["codes"], f"{name}.codes", None)
        feature["codes"] = dict(zip(where.codes(list(codes), f"{name}.codes"), map(str, codes.values()),
                                    strict=True))
    return Feature(**feature)


class _Where:
    """Builds the errors of one schema file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, field_name: str, problem: str) -> SchemaError:
        at = f"field {field_name!r}" if field_name else "the top level"
        return SchemaError(f"{self.path}: {at}: {problem}")

    def mapping(self, value: Any, name: str, kind: type | None) -> dict[str, Any]:
        """`value` as a dict; with a dataclass `kind`, checked against its fields (none unknown,
        every required one present)."""
        if not isinstance(value, dict):
            raise self.error(name, f"should be a mapping of keys to values, not {type(value).__name__}")
        if kind is None:
            return dict(value)
        known = {f.name: f for f in fields(kind)}
        unknown = sorted(set(map(str, value)) - set(known))
        if unknown:
            raise self.error(name, f"unknown key(s) {unknown}; the keys are {sorted(known)}")
        required = [k for k, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
        absent = [k for k in required if k not in value]
        if absent:
            raise self.error(name, f"missing key(s) {absent} (required: {required})")
        return {str(k): v for k, v in value.items()}

    def codes(self, values: Any, name: str) -> list[str]:
        values = values if isinstance(values, list) else [values]
        out = [canonical_code(v) for v in values]
        if any(c is None or c == "" for c in out):
            raise self.error(name, f"{values!r}: every code must be a value of the CSV (not empty)")
        return [c for c in out if c is not None]
