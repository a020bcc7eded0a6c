"""The pre-training corpus of the pocket LLM, generated from data/knowledge/ and nothing else.

Five kinds of examples, all chats except the documents:
  - "record": a synthetic patient, serialized with labkit.data.to_text exactly as an annotator
    sends a real one, asked with labkit.prompts' templates (and a few rewordings); the answer is
    the textbook rule's probability ("0.72") or Yes/No; then a few follow-up threshold checks
    ("Is the ... at least 140 mg/dL?");
  - "abstract": a synthetic abstract asked "is it about a neoplasm?" the same way;
  - "explain": a record and "which findings point to ...?", answered with the rules that fire;
  - "knowledge": questions about the rules, and the rules as plain documents with their source;
  - "chat": plain conversation (data/knowledge/general_chat.yaml).

The shipped data sets are never read here: only their schemas (column names, codes, units and
the task statement). `check_leaks` proves it on the generated text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from labkit import prompts
from labkit.config import option, require
from labkit.data import SCHEMAS, to_text
from labkit.data.schema import Schema, Task, is_missing
from labkit.data.text import Style
from labkit.pocket.abstracts import AbstractWriter
from labkit.pocket.knowledge import (
    Rule,
    TaskKnowledge,
    general_chat,
    load_knowledge,
    short_citation,
)
from labkit.pocket.patients import sample_patients
from labkit.pocket.tokenizer import END_OF_TEXT, render_chat

# Rewordings of the two official prompts, so that the model is not brittle to the exact words.
PROBABILITY_REWORDINGS = (
    "What is the probability that {statement}? Answer with a number between 0.0 and 1.0.",
    "How likely is it that {statement}? Give a probability from 0.0 (very unlikely) to 1.0 "
    "(very likely).",
    "Estimate the probability that {statement}. Reply with one number between 0 and 1.",
)
YES_NO_REWORDINGS = (
    "Based on this record, is it likely that {statement}? Reply with Yes or No.",
    "Answer Yes or No: is it likely that {statement}?",
    "Do you think that {statement}? Answer Yes or No.",
)
STYLE_WEIGHTS: dict[Style, float] = {"list": 0.7, "prose": 0.3}  # annotators send "list" by default
REWORDED_SHARE = 0.15  # the rest ask with the official templates of labkit.prompts
YES_NO_SHARE = 0.5
EXPLAIN_SHARE = 0.04
CHECKS_PER_RECORD = 3  # follow-up threshold questions per synthetic record (see follow_ups)
CHECK_WEIGHT = 2.0  # loss weight of a follow-up's answer


@dataclass(frozen=True)
class Example:
    """One training item: a chat (messages) or a plain document (text).

    p_yes: for a Yes/No question, the rule's probability of Yes; pre-training uses it as a soft
    target for the answer token (the text holds one sampled answer). answer_weight and
    prompt_weight: how much predicting a token of the assistant's answer, or of the rest of the
    chat, counts in the loss (a document's tokens count 1).
    """

    kind: str
    task: str | None = None
    messages: tuple[dict[str, str], ...] = ()
    text: str = ""
    p_yes: float | None = None
    answer_weight: float = 1.0
    prompt_weight: float = 0.5

    def render(self) -> str:
        """The example as the model reads it (the chat template applied; a document ends with
        the end-of-text token)."""
        return render_chat(self.messages) if self.messages else self.text + END_OF_TEXT


@dataclass(frozen=True)
class CorpusConfig:
    """How many examples of each kind; the same seed gives the same corpus."""

    seed: int = option(0, "draws every synthetic patient, abstract and wording")
    records: dict[str, int] = option(factory=lambda: dict(DEFAULT_RECORDS),
                                     help="synthetic records per task")
    abstracts: int = option(2000, "synthetic abstracts")
    knowledge_repeats: int = option(3, "times each rule is asked about and stated as a document")
    chat_repeats: int = option(4, "times each plain conversation appears")
    # The record (or abstract) in a question counts half: predicting its values digit by digit
    # teaches the model where each value sits and how large it is, which it needs to answer
    # (docs/pocket_llm.md: it learned the rule faster than with no loss on the record).
    answer_weight: float = option(5.0, "loss weight of a record's answer")
    question_prompt_weight: float = option(0.5, "loss weight of the rest of a record's chat")
    checks_per_record: int = option(CHECKS_PER_RECORD, "follow-up threshold questions per record")

    def __post_init__(self) -> None:
        for name in ("abstracts", "knowledge_repeats", "chat_repeats"):
            require(getattr(self, name) >= 1, self, name, "it must be at least 1")
        require(self.checks_per_record >= 0, self, "checks_per_record", "it must be 0 or more")
        require(self.answer_weight > 0, self, "answer_weight", "it must be positive")
        require(self.question_prompt_weight >= 0, self, "question_prompt_weight", "it must be 0 or more")
        unknown = sorted(set(self.records) - set(SCHEMAS))
        require(not unknown and all(n >= 1 for n in self.records.values()), self, "records",
                f"use tasks of labkit.data.SCHEMAS ({unknown} are not) with at least 1 record each")

    def scaled(self, factor: float) -> CorpusConfig:
        """The same mix with every count multiplied by `factor` (for quick runs and tests)."""
        return replace(
            self,
            records={k: max(1, round(v * factor)) for k, v in self.records.items()},
            abstracts=max(1, round(self.abstracts * factor)),
            knowledge_repeats=max(1, round(self.knowledge_repeats * min(factor * 4, 1))),
            chat_repeats=max(1, round(self.chat_repeats * min(factor * 4, 1))),
        )


# Records per table: the five SERVAL tables get the most, the laboratory tables (many numbers to
# read) more than the symptom questionnaire, which a small model learns quickly.
DEFAULT_RECORDS: dict[str, int] = {
    "heart": 5000, "early_diabetes": 3000, "ilpd": 11000, "hcv": 11000, "pima": 13000,
    "cleveland": 1200, "heart_failure": 1200, "thyroid": 1200, "breast_cancer": 500,
    "cirrhosis": 1200,
}


def build_corpus(config: CorpusConfig | None = None) -> list[Example]:
    """Generate the whole corpus, shuffled; deterministic in config.seed."""
    config = config or CorpusConfig()
    rng = np.random.default_rng(config.seed)
    examples: list[Example] = []
    for task, count in config.records.items():
        examples += record_examples(task, count, rng, config.answer_weight,
                                    config.question_prompt_weight, config.checks_per_record)
    examples += abstract_examples(config.abstracts, rng, config.answer_weight,
                                  config.question_prompt_weight)
    tasks = [*config.records, "abstracts"]
    for _ in range(config.knowledge_repeats):
        examples += knowledge_examples(tasks, rng)
    for _ in range(config.chat_repeats):
        examples += chat_examples()
    order = rng.permutation(len(examples))
    return [examples[i] for i in order]


def pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def question(task: Task, text: str, p: float, rng: np.random.Generator) -> tuple[str, str, bool]:
    """(user message, answer, is_yes_no) for one record text with rule probability p."""
    yes_no = rng.random() < YES_NO_SHARE
    reworded = rng.random() < REWORDED_SHARE
    if yes_no:
        answer = prompts.yes_no_answer(bool(rng.random() < p))
        if not reworded:
            return prompts.yes_no_prompt(text, task), answer, True
        ask = pick(rng, YES_NO_REWORDINGS).format(statement=task.statement)
    else:
        answer = prompts.probability_answer(p)
        if not reworded:
            return prompts.probability_prompt(text, task), answer, False
        ask = pick(rng, PROBABILITY_REWORDINGS).format(statement=task.statement)
    user = f"{ask}\n\n{text}" if rng.random() < 0.5 else f"{text}\n\n{ask}"
    return user, answer, yes_no


def ask(kind: str, task: str, text: str, p: float, rng: np.random.Generator, *,
        answer_weight: float, prompt_weight: float) -> Example:
    """A chat that asks about one record (or abstract) text."""
    user, answer, yes_no = question(SCHEMAS[task].task, text, p, rng)
    return Example(
        kind=kind, task=task,
        messages=({"role": "user", "content": user}, {"role": "assistant", "content": answer}),
        p_yes=p if yes_no else None, answer_weight=answer_weight, prompt_weight=prompt_weight,
    )


def record_examples(task: str, n: int, rng: np.random.Generator, answer_weight: float = 5.0,
                    prompt_weight: float = 0.5, checks: int = CHECKS_PER_RECORD) -> list[Example]:
    """n synthetic patients of one table, each asked once and then `checks` threshold questions
    about its values (some records are also explained)."""
    schema, knowledge = SCHEMAS[task], load_knowledge(task)
    styles, weights = list(STYLE_WEIGHTS), list(STYLE_WEIGHTS.values())
    out = []
    for record in sample_patients(knowledge, schema, n, rng):
        text = to_text(record, schema, style=styles[int(rng.choice(len(styles), p=weights))])
        if not text:
            continue  # every feature dropped: nothing to ask about
        p = knowledge.risk(record)
        example = ask("record", task, text, p, rng, answer_weight=answer_weight, prompt_weight=prompt_weight)
        turns = follow_ups(record, schema, knowledge, checks, rng)
        out.append(replace(example, messages=example.messages + turns) if turns else example)
        if rng.random() < EXPLAIN_SHARE:
            out.append(explain_example(record, text, schema, knowledge))
    return out


def follow_ups(record: dict[str, Any], schema: Schema, knowledge: TaskKnowledge, n: int,
               rng: np.random.Generator) -> tuple[dict[str, str], ...]:
    """Up to n follow-up turns "Is the <feature> at least <threshold>?" about the record's values,
    answered exactly from the textbook thresholds.

    They come after the main question, so its answer is learned in exactly the single-turn form
    the annotators use; each costs a few dozen tokens and teaches, in the full record, the comparisons
    the risk is built from (cheap, noise-free supervision that a small model needs to learn to
    read numbers).
    """
    rules = [r for r in knowledge.rules if (r.above is not None or r.below is not None)
             and r.feature in schema.feature_names and not is_missing(record[r.feature])]
    if not rules:
        return ()
    # the rules that weigh most in the risk are asked most often (never twice per record)
    weights = np.array([abs(r.weight) for r in rules])
    picked = rng.choice(len(rules), size=min(n, len(rules)), replace=False,
                        p=weights / weights.sum())
    turns: list[dict[str, str]] = []
    for i in picked:
        rule = rules[i]
        feature = schema.feature(rule.feature)
        question = f"{threshold_question(rule, feature.label, feature.unit)} Answer Yes or No."
        holds = rule.contribution(record[rule.feature]) != 0
        turns += [{"role": "user", "content": question},
                  {"role": "assistant", "content": prompts.yes_no_answer(holds)}]
    return tuple(turns)


def abstract_examples(n: int, rng: np.random.Generator, answer_weight: float = 5.0,
                      prompt_weight: float = 0.5) -> list[Example]:
    """n synthetic abstracts, each asked whether it is about a neoplasm."""
    writer = AbstractWriter(load_knowledge("abstracts"), rng)
    out = []
    for _ in range(n):
        abstract = writer.write()
        out.append(ask("abstract", "abstracts", abstract.text, writer.risk(abstract), rng,
                       answer_weight=answer_weight, prompt_weight=prompt_weight))
    return out


def citable_rules(knowledge: TaskKnowledge) -> list[Rule]:
    """The rules an explanation can name: threshold and code rules that raise the risk (a linear or
    logarithmic term is not a finding a record shows or lacks)."""
    return [r for r in knowledge.rules if r.linear is None and not r.log and r.weight > 0]


def fired_rules(record: dict[str, Any], knowledge: TaskKnowledge) -> list[Rule]:
    """The citable rules that hold for a record, strongest first."""
    values = knowledge.values(record)
    fired = [r for r in citable_rules(knowledge) if r.contribution(values.get(r.feature)) > 0]
    return sorted(fired, key=lambda r: -r.weight)


def explain_example(record: dict[str, Any], text: str, schema: Schema,
                    knowledge: TaskKnowledge) -> Example:
    """A record and "which findings point to ...?", answered with the rules that fire."""
    user = prompts.explain_prompt(text, knowledge.condition)
    return Example(kind="explain", task=schema.name, messages=(
        {"role": "user", "content": user}, {"role": "assistant", "content": explanation(record, knowledge)}))


def explanation(record: dict[str, Any], knowledge: TaskKnowledge, most: int = 4) -> str:
    """The answer to the explain question: the `most` strongest rules that hold, in their words."""
    fired = fired_rules(record, knowledge)
    if fired:
        return " ".join(r.text for r in fired[:most])
    return no_findings(knowledge)


def no_findings(knowledge: TaskKnowledge) -> str:
    return f"None of the findings in this record is a textbook sign of {knowledge.condition}."


def threshold_question(rule: Rule, label: str, unit: str) -> str:
    """'Is the plasma glucose ... at least 140 mg/dL?' for a threshold rule."""
    limit = f"{rule.above:g}" if rule.above is not None else f"{rule.below:g}"
    relation = "at least" if rule.above is not None else "below"
    name = label[0].lower() + label[1:] if label[1:2].islower() else label  # "ST depression" stays
    return f"Is the {name} {relation} {limit}{' ' + unit if unit else ''}?"


def knowledge_examples(tasks: Iterable[str], rng: np.random.Generator) -> list[Example]:
    """Each rule as a document with its source and as an answer; one summary per task."""
    out = []
    for task in tasks:
        knowledge = load_knowledge(task)
        condition = knowledge.condition
        for rule in knowledge.rules:
            out.append(Example(kind="knowledge", task=task,
                               text=f"{rule.text} ({short_citation(rule.source)})"))
            user = pick(rng, (
                f"Tell me a clinical rule about {condition}.",
                f"What is one sign of {condition}?",
                f"Give me a fact about {condition} with its source.",
            ))
            answer = f"{rule.text} Source: {short_citation(rule.source)}."
            out.append(Example(kind="knowledge", task=task, messages=(
                {"role": "user", "content": user}, {"role": "assistant", "content": answer})))
        strongest = sorted((r for r in knowledge.rules if r.weight > 0), key=lambda r: -r.weight)
        summary = " ".join(r.text for r in strongest[:5])
        out.append(Example(kind="knowledge", task=task, messages=(
            {"role": "user", "content": f"What makes {condition} more likely?"},
            {"role": "assistant", "content": summary})))
    return out


def chat_examples() -> list[Example]:
    """Every phrasing of every general chat item, once."""
    out = []
    for item in general_chat():
        for user in item["user"]:
            out.append(Example(kind="chat", messages=(
                {"role": "user", "content": user},
                {"role": "assistant", "content": item["assistant"]})))
    return out


# --- leak checks -------------------------------------------------------------------------------

SHINGLE = 8  # words


def shingles(text: str, size: int = SHINGLE) -> set[tuple[str, ...]]:
    """Every run of `size` consecutive words (lower case, punctuation stripped)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}


@dataclass
class LeakReport:
    """What of the shipped data sets appears in a corpus.

    records: per table, real records whose serialization is a paragraph of the corpus; must be 0.
    chance_matches: the same for tables with at most one numeric column (early_diabetes: age and
    15 yes/no symptoms), where a synthetic patient can equal a real one by chance; reported, not a
    leak (tests prove separately that the generator never reads a data set).
    abstract_shingles: 8-word runs of the real abstracts found in the corpus; must be 0.
    """

    records: dict[str, int]
    chance_matches: dict[str, int]
    abstract_shingles: int
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not any(self.records.values()) and self.abstract_shingles == 0

    def __str__(self) -> str:
        chance = {k: v for k, v in self.chance_matches.items() if v}
        note = f"; chance matches in all-coded tables {chance}" if chance else ""
        if self.clean:
            return "no shipped record or abstract text in the corpus" + note
        found = {k: v for k, v in self.records.items() if v}
        return (f"LEAK: records {found}, abstract shingles {self.abstract_shingles}{note}; e.g. "
                + " | ".join(self.examples[:3]))


def is_coded_table(schema: Schema) -> bool:
    """At most one numeric column: records can coincide with synthetic ones by chance."""
    return sum(f.kind == "numeric" for f in schema.features) <= 1


def check_leaks(corpus: Iterable[Example], tasks: Iterable[str]) -> LeakReport:
    """Look for every real record (both text styles) and every 8-word run of the real abstracts.

    Reads the shipped data sets, which the corpus generator itself never does.
    """
    from labkit.data import load

    corpus = list(corpus)
    # A record text is a whole paragraph of a message (the question is another paragraph).
    paragraphs = {part for e in corpus for m in e.messages for part in m["content"].split("\n\n")}
    records: dict[str, int] = {}
    chance: dict[str, int] = {}
    examples: list[str] = []
    for task in tasks:
        ds = load(task)
        if ds.schema.kind == "text":
            continue
        hits = 0
        for record in ds.frame[ds.schema.feature_names].to_dict("records"):
            texts = [to_text(record, ds.schema, style=style) for style in ("list", "prose")]
            if any(t in paragraphs for t in texts):
                hits += 1
                examples.append(texts[0][:80])
        (chance if is_coded_table(ds.schema) else records)[task] = hits
    real: set[tuple[str, ...]] = set()
    for text in load("abstracts").frame["text"]:
        real |= shingles(text)
    found = 0
    for e in corpus:
        common = shingles(e.render()) & real
        found += len(common)
        examples += [" ".join(s) for s in list(common)[:1]]
    return LeakReport(records, chance, found, examples)
