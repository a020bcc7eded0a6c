"""The pocket LLM's clinical knowledge: rules from the literature, read from data/knowledge/.

Each task file holds
  - `rules`: a threshold (above/below), a coded value (equals), a linear or a logarithmic term,
    each with a weight in log-odds, a sentence that states it, and the key of its source;
  - `patients`: how synthetic patients are drawn (see labkit.pocket.patients);
  - `intercept`: the log-odds of a patient for whom no rule fires.

The risk of a record is the logistic of intercept + the sum of the weights of the rules that hold:
a hand-set "textbook" score. The pocket LLM is taught to answer with that risk; it never sees a
label of a shipped data set.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from labkit.data.schema import canonical_code, is_missing
from labkit.paths import KNOWLEDGE_DIR


class KnowledgeError(ValueError):
    """A knowledge file is malformed."""


@dataclass(frozen=True)
class Rule:
    """One clinical rule: when it holds, `weight` log-odds are added to the risk.

    Exactly one condition is set: above (value >= above), below (value < below), equals (the
    CSV code), linear (weight per `per` units between `from` and `to`) or log (weight * ln value).
    """

    feature: str
    weight: float
    text: str
    source: str
    above: float | None = None
    below: float | None = None
    equals: str | None = None
    linear: tuple[float, float, float] | None = None  # (from, to, per)
    log: bool = False

    def contribution(self, value: Any) -> float:
        """The log-odds this rule adds for one value (0 when the value is missing)."""
        if is_missing(value):
            return 0.0
        if self.equals is not None:
            return self.weight if canonical_code(value) == self.equals else 0.0
        x = float(value)
        if self.above is not None:
            return self.weight if x >= self.above else 0.0
        if self.below is not None:
            return self.weight if x < self.below else 0.0
        if self.linear is not None:
            start, stop, per = self.linear
            return self.weight * (min(max(x, start), stop) - start) / per
        return self.weight * math.log(max(x, 1e-6))


@dataclass(frozen=True)
class TaskKnowledge:
    """The rules of one task and how to draw its synthetic patients."""

    task: str
    condition: str
    intercept: float
    rules: tuple[Rule, ...]
    patients: dict[str, dict[str, Any]]
    derived: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def values(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record's values plus its derived features (e.g. MaxHR / (220 - Age))."""
        values = dict(record)
        for name, formula in self.derived.items():
            values[name] = evaluate(formula, values)
        return values

    def logit(self, record: Mapping[str, Any]) -> float:
        """intercept + the weights of the rules that hold for this record."""
        values = self.values(record)
        return self.intercept + sum(r.contribution(values.get(r.feature)) for r in self.rules)

    def risk(self, record: Mapping[str, Any]) -> float:
        """The textbook probability of the condition for one record."""
        return 1.0 / (1.0 + math.exp(-self.logit(record)))


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv}


def evaluate(formula: str, values: Mapping[str, Any]) -> float:
    """Evaluate a derived feature such as "MaxHR / (220 - Age)": + - * / over columns and numbers.

    Returns NaN when an input is missing or the result is undefined.
    """

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = walk(node.left), walk(node.right)
            if type(node.op) is ast.Div and right == 0:
                return math.nan
            return _OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            value = values.get(node.id)
            return math.nan if value is None or is_missing(value) else float(value)
        raise KnowledgeError(f"derived feature {formula!r}: only + - * /, numbers and columns")

    return walk(ast.parse(formula, mode="eval"))


def _rule(item: dict[str, Any], where: str, citations: Mapping[str, str]) -> Rule:
    conditions = [k for k in ("above", "below", "equals", "linear", "log") if k in item]
    if len(conditions) != 1:
        raise KnowledgeError(
            f"{where}: a rule needs exactly one of above/below/equals/linear/log, got {conditions}"
        )
    missing = [k for k in ("feature", "weight", "text", "source") if k not in item]
    if missing:
        raise KnowledgeError(f"{where}: rule {item} lacks {missing}")
    if item["source"] not in citations:
        raise KnowledgeError(
            f"{where}: source {item['source']!r} is not in {KNOWLEDGE_DIR / 'citations.yaml'}; "
            "add the reference there."
        )
    linear = item.get("linear")
    return Rule(
        feature=str(item["feature"]),
        weight=float(item["weight"]),
        text=str(item["text"]),
        source=str(item["source"]),
        above=float(item["above"]) if "above" in item else None,
        below=float(item["below"]) if "below" in item else None,
        equals=_equals(item, where),
        linear=(float(linear["from"]), float(linear["to"]), float(linear["per"])) if linear else None,
        log=bool(item.get("log", False)),
    )


def _equals(item: dict[str, Any], where: str) -> str | None:
    if "equals" not in item:
        return None
    code = canonical_code(item["equals"])
    if code is None:
        raise KnowledgeError(f"{where}: `equals` needs a code, got {item['equals']!r}")
    return code


@cache
def citations() -> dict[str, str]:
    """Source key -> full reference (data/knowledge/citations.yaml)."""
    return {key: entry["reference"] for key, entry in _read_citations().items()}


@cache
def short_citation(key: str) -> str:
    """How the corpus cites a source: "ADA Standards of Care 2024", "Kwo et al. 2017"."""
    return str(_read_citations()[key]["short"])


@cache
def _read_citations() -> dict[str, dict[str, str]]:
    path = KNOWLEDGE_DIR / "citations.yaml"
    data = _read(path)
    for key, entry in data.items():
        if not isinstance(entry, dict) or {"short", "reference"} - set(entry):
            raise KnowledgeError(f"{path}: {key} needs a `short` name and a `reference`")
    return data


def _read(path: Path) -> Any:
    if not path.is_file():
        raise KnowledgeError(f"{path}: knowledge file not found; restore data/knowledge/ from git.")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise KnowledgeError(f"{path}: not valid YAML ({err})") from err


@cache
def load_knowledge(task: str) -> TaskKnowledge:
    """The rules and patient ranges of one task (data/knowledge/<task>.yaml)."""
    path = KNOWLEDGE_DIR / f"{task}.yaml"
    data = _read(path)
    refs = citations()
    rules = tuple(_rule(item, f"{path}, rule {i + 1}", refs) for i, item in enumerate(data["rules"]))
    known = {"task", "condition", "intercept", "rules", "patients", "derived"}
    return TaskKnowledge(
        task=data["task"],
        condition=data["condition"],
        intercept=float(data["intercept"]),
        rules=rules,
        patients=dict(data.get("patients") or {}),
        derived=dict(data.get("derived") or {}),
        extra={k: v for k, v in data.items() if k not in known},
    )


def knowledge_tasks() -> list[str]:
    """Every task that has a knowledge file."""
    skip = {"citations", "general_chat"}
    return sorted(p.stem for p in KNOWLEDGE_DIR.glob("*.yaml") if p.stem not in skip)


def general_chat() -> list[dict[str, Any]]:
    """Plain conversation items: {"user": [phrasings...], "assistant": answer}."""
    return list(_read(KNOWLEDGE_DIR / "general_chat.yaml"))
