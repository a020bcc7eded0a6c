"""Patient records as text: what the LLM reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from labkit.data.schema import Feature, Schema, is_missing

Style = Literal["list", "prose"]
STYLES: tuple[str, ...] = ("list", "prose")


def format_number(number: float) -> str:
    """148, 33.6, 0.627, 263358: integers as integers, else four significant digits."""
    if number.is_integer():
        return str(int(number))
    return f"{number:.0f}" if abs(number) >= 1000 else f"{number:.4g}"


def format_value(feature: Feature, value: Any) -> str:
    """A value as a clinician would write it: 148 mg/dL, 0.627, male, yes."""
    if feature.codes:
        return feature.codes[str(value)]
    if feature.kind == "text":
        return str(value)
    text = format_number(float(value))
    return f"{text} {feature.unit}" if feature.unit else text


def _lower(label: str) -> str:
    """'Body mass index' -> 'body mass index', but 'ALT level' stays."""
    return label[0].lower() + label[1:] if label[1:2].islower() else label


def _prose(facts: list[tuple[Feature, Any]]) -> str:
    by_label = {f.label: (f, v) for f, v in facts}
    who = "patient"
    if "Sex" in by_label:
        f, v = by_label.pop("Sex")
        who = f"{format_value(f, v)} patient"
    if "Age" in by_label:
        f, v = by_label.pop("Age")
        who = f"{round(float(v))}-year-old {who}"
    sentences = [f"A {who}." if who[0] not in "aeiou8" else f"An {who}."]
    present = [_lower(f.label) for f, v in by_label.values() if f.kind == "binary"
               and format_value(f, v) == "yes"]
    absent = [_lower(f.label) for f, v in by_label.values() if f.kind == "binary"
              and format_value(f, v) == "no"]
    sentences += [f"The {_lower(f.label)} is {format_value(f, v)}." for f, v in by_label.values()
                  if f.kind != "binary"]
    if present:
        sentences.append(f"Present: {', '.join(present)}.")
    if absent:
        sentences.append(f"Absent: {', '.join(absent)}.")
    return " ".join(sentences)


def to_text(record: Mapping[str, Any], schema: Schema, style: Style = "list") -> str:
    """Serialize one record (column -> value) for a prompt; missing values are left out.

    style="list": one "Label: value unit" line per feature.
    style="prose": the same facts as sentences in one paragraph.
    A text dataset's record is its text, whatever the style.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {STYLES}")
    if schema.kind == "text":
        return str(record[schema.features[0].name])
    facts = [(f, record[f.name]) for f in schema.features if not is_missing(record[f.name])]
    if style == "list":
        return "\n".join(f"{f.label}: {format_value(f, v)}" for f, v in facts)
    return _prose(facts)
