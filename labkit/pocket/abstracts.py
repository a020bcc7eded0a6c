"""Synthetic medical abstracts from the hand-written lexicon in data/knowledge/abstracts.yaml.

An abstract has a main topic (neoplasm, digestive, nervous, cardiovascular, general), a title and
background, aim, method, result and conclusion sentences whose slots ({condition}, {intervention},
{measure}, ...) are filled from the topic's vocabulary; sometimes a passing mention of another
topic. The answer to "is this abstract about a neoplasm?" comes from the lexical evidence counted
while writing: the slots filled with neoplasm terms for, with other-condition terms against
(the rule in the same file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from labkit.pocket.knowledge import TaskKnowledge

NEOPLASM = "neoplasm"
TOPIC_SLOTS = ("condition", "intervention", "measure", "finding")
MAIN_NEOPLASM_RATE = 0.4  # share of abstracts whose main topic is a neoplasm
MENTION_RATE = 0.35  # share with a passing mention of another topic
SECTION_COUNTS = {"background": (1, 2), "aim": (1, 1), "method": (1, 4), "result": (2, 8),
                  "conclusion": (1, 1)}
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Abstract:
    text: str
    topic: str
    neoplasm_terms: int
    other_terms: int


class AbstractWriter:
    """Writes abstracts with one numpy Generator; the same seed gives the same abstracts."""

    def __init__(self, knowledge: TaskKnowledge, rng: np.random.Generator) -> None:
        self.topics: dict[str, dict[str, list[str]]] = knowledge.extra["topics"]
        self.shared: dict[str, list[str]] = knowledge.extra["shared"]
        self.templates: dict[str, list[str]] = knowledge.extra["templates"]
        self.knowledge = knowledge
        self.rng = rng

    def pick(self, items: list[str]) -> str:
        return items[int(self.rng.integers(len(items)))]

    def write(self) -> Abstract:
        """One abstract and the lexical evidence it carries."""
        others = [t for t in self.topics if t != NEOPLASM]
        topic = NEOPLASM if self.rng.random() < MAIN_NEOPLASM_RATE else self.pick(others)
        counts = {NEOPLASM: 0, "other": 0}
        # The main condition and intervention stay the same through the abstract, as in a paper.
        fixed = {"condition": self._term(topic, "condition"),
                 "intervention": self._term(topic, "intervention"),
                 "n": str(int(self.rng.integers(6, 400)))}
        sentences = [self._fill(self.pick(self.templates["title"]), topic, fixed, counts)]
        for section, (low, high) in SECTION_COUNTS.items():
            count = int(self.rng.integers(low, high + 1))
            templates = self.templates[section]
            for i in self.rng.permutation(len(templates))[:count]:  # no sentence twice
                sentences.append(self._fill(templates[i], topic, fixed, counts))
        if self.rng.random() < MENTION_RATE:
            # Neoplasm abstracts mention other conditions; others often mention a cancer.
            pool = others if topic == NEOPLASM else [NEOPLASM, *others]
            other = self.pick([t for t in pool if t != topic])
            mention = self._fill(self.pick(self.templates["mention"]), other,
                                 {"n": fixed["n"]}, counts)
            sentences.insert(int(self.rng.integers(2, len(sentences) + 1)), mention)
        return Abstract(" ".join(sentences), topic, counts[NEOPLASM], counts["other"])

    def risk(self, abstract: Abstract) -> float:
        """The rule's probability that the abstract is about a neoplasm."""
        return self.knowledge.risk(
            {"neoplasm_terms": abstract.neoplasm_terms, "other_terms": abstract.other_terms}
        )

    def _term(self, topic: str, slot: str) -> str:
        words = self.topics[topic]
        term = self.pick(words[slot])
        for place in ("organ", "site"):  # "{organ} cancer", "carcinoma of the {site}"
            if "{" + place + "}" in term:
                term = term.replace("{" + place + "}", self.pick(words[place]))
        return term

    def _fill(self, template: str, topic: str, fixed: dict[str, str], counts: dict[str, int]) -> str:
        def value(match: re.Match[str]) -> str:
            key = match.group(1)
            base = key.lower().rstrip("2")
            if base in TOPIC_SLOTS:
                counts[NEOPLASM if topic == NEOPLASM else "other"] += 1
                term = None if key.endswith("2") else fixed.get(base)
                term = term or self._term(topic, base)
            elif key == "n":
                term = fixed["n"]
            elif key == "n2":  # a part of the n patients
                term = str(int(self.rng.integers(1, int(fixed["n"]) + 1)))
            else:
                term = self._shared(base)
            return term[0].upper() + term[1:] if key[0].isupper() else term

        sentence = _SLOT.sub(value, template)
        return sentence[0].upper() + sentence[1:]

    def _shared(self, key: str) -> str:
        rng = self.rng
        if key == "k":
            return str(int(rng.integers(1, 25)))
        if key == "unit":
            return self.pick(["weeks", "months", "years", "days"])
        if key in ("x", "y"):
            return f"{rng.uniform(0.5, 250):.1f}"
        if key == "s":
            return f"{rng.uniform(0.1, 30):.1f}"
        if key == "d":
            return str(int(rng.integers(1, 10)))
        if key == "change":
            return self.pick(self.shared["change"])
        if key in self.shared:
            return self.pick(self.shared[key])
        raise KeyError(f"data/knowledge/abstracts.yaml: unknown slot {{{key}}}")


def write_abstracts(knowledge: TaskKnowledge, n: int, rng: np.random.Generator) -> list[Any]:
    """n abstracts with their rule probability: [(Abstract, p), ...]."""
    writer = AbstractWriter(knowledge, rng)
    out = []
    for _ in range(n):
        abstract = writer.write()
        out.append((abstract, writer.risk(abstract)))
    return out
