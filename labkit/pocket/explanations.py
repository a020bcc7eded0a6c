"""A task where alignment has something real to fix: explanations that cite findings a record lacks.

Asked "Which findings in this record point to diabetes?", the pocket LLM answers in its rules'
words, and often names a rule that does not hold for the record in front of it (a BMI rule for a
lean patient): the explanation sounds right and is unfaithful. The knowledge files say which rules
hold for any record, so faithfulness is measured without a single label:

    precision: the share of the rules an answer cites that hold for the record (1: no invented finding)
    recall:    the share of the record's strongest rules (up to four) that the answer cites

Preference pairs come from synthetic patients (labkit.pocket.patients), never from a shipped data
set: the chosen answer cites the rules that hold, the rejected one adds or swaps in rules that do
not. Held-out prompts are the real records of a data set's split, features only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from labkit import prompts
from labkit.data import SCHEMAS, load, to_text
from labkit.pocket.corpus import citable_rules, explanation, fired_rules, no_findings
from labkit.pocket.knowledge import Rule, TaskKnowledge, load_knowledge
from labkit.pocket.patients import sample_patients
from labkit.worker.formats import Sample

MOST = 4  # rules an explanation names at most, strongest first (as the corpus taught)


def unfaithful_explanation(record: dict[str, Any], knowledge: TaskKnowledge, rng: np.random.Generator) -> str:
    """A plausible wrong answer: one or two rules that do not hold among the record's strongest ones
    (in place of the weakest when four already hold), in the order of weight the corpus taught."""
    holding = fired_rules(record, knowledge)
    fired = holding[:MOST]
    citable = citable_rules(knowledge)
    absent = [r for r in citable if r not in holding]  # a fifth rule that holds would be no mistake
    invented = [absent[i] for i in rng.choice(len(absent), size=min(len(absent), int(rng.integers(1, 3))),
                                              replace=False)]
    cited = sorted(fired[:MOST - len(invented)] + invented, key=lambda r: -r.weight)
    return " ".join(r.text for r in cited)


def preference_pairs(task: str, n: int, seed: int) -> list[Sample]:
    """n preference samples on synthetic patients of `task`: a faithful explanation (chosen) over an
    unfaithful one (rejected). Records for which no rule is absent are skipped."""
    knowledge, schema = load_knowledge(task), SCHEMAS[task]
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    while len(out) < n:
        for record in sample_patients(knowledge, schema, n, rng):
            text = to_text(record, schema)
            if not text or len(out) == n:
                continue
            chosen = explanation(record, knowledge, MOST)
            rejected = unfaithful_explanation(record, knowledge, rng)
            if chosen != rejected:
                out.append(Sample(prompts.explain_prompt(text, knowledge.condition), chosen=chosen,
                                  rejected=rejected, source=f"synthetic {task} patient, seed {seed}"))
    return out


@dataclass(frozen=True)
class HeldOut:
    """Records as explain prompts (real ones of a split, or synthetic), with the knowledge that scores
    an answer to each."""

    prompts: list[str]
    records: list[dict[str, Any]]
    knowledge: TaskKnowledge


def held_out(task: str, split: str = "val", n: int | None = None, seed: int = 0) -> HeldOut:
    """The explain prompts of a data set's split (features only: no label is read)."""
    dataset = load(task, seed=seed)
    knowledge = load_knowledge(task)
    records = dataset.features(split).to_dict(orient="records")[:n]
    texts = [to_text(r, dataset.schema) for r in records]
    return HeldOut([prompts.explain_prompt(t, knowledge.condition) for t in texts], records, knowledge)


def synthetic_records(task: str, n: int, seed: int) -> HeldOut:
    """n synthetic patients of `task` as explain prompts with their records (for online training:
    a sampled answer is scored against its record)."""
    knowledge, schema = load_knowledge(task), SCHEMAS[task]
    records = sample_patients(knowledge, schema, n, np.random.default_rng(seed))
    questions = [prompts.explain_prompt(to_text(r, schema), knowledge.condition) for r in records]
    return HeldOut(questions, records, knowledge)


def held_out_pairs(held: HeldOut, seed: int) -> list[Sample]:
    """One preference pair per held-out record: its faithful explanation over an unfaithful one."""
    rng = np.random.default_rng(seed)
    return [Sample(prompt, chosen=explanation(record, held.knowledge, MOST),
                   rejected=unfaithful_explanation(record, held.knowledge, rng))
            for prompt, record in zip(held.prompts, held.records, strict=True)]


def cited_rules(answer: str, knowledge: TaskKnowledge) -> list[Rule]:
    """The rules an answer names, by their exact words."""
    return [r for r in knowledge.rules if r.text in answer]


def faithfulness(answer: str, record: dict[str, Any], knowledge: TaskKnowledge) -> tuple[float, float]:
    """(precision, recall) of one answer's cited rules against the rules that hold for the record.

    "No finding" is a citation too: right (precision 1) when no rule holds, else an omission (0).
    An answer that names nothing the rules know (free text) has precision 0: nothing it says can be
    checked against the record."""
    fired = fired_rules(record, knowledge)[:MOST]
    cited = cited_rules(answer, knowledge)
    if not fired:
        right = not cited and no_findings(knowledge) in answer
        return float(right), 1.0
    if not cited:
        return 0.0, 0.0
    hold = {r.text for r in fired_rules(record, knowledge)}
    precision = sum(r.text in hold for r in cited) / len(cited)
    recall = sum(r in cited for r in fired) / len(fired)
    return precision, recall


def explain(model: Any, tokenizer: Any, questions: list[str], max_new_tokens: int = 100,
            batch_size: int = 32) -> list[str]:
    """The model's greedy answers to explain prompts (one user turn each), decoded without special tokens."""
    from labkit.chat import generate_replies

    return generate_replies(model, tokenizer, [[{"role": "user", "content": q}] for q in questions],
                            max_new_tokens, batch_size)


def mean_faithfulness(answers: list[str], held: HeldOut) -> dict[str, float]:
    """Mean precision and recall of answers to `held`'s prompts, in order."""
    if len(answers) != len(held.records):
        raise ValueError(f"{len(answers)} answers for {len(held.records)} held-out records")
    scores = [faithfulness(a, r, held.knowledge) for a, r in zip(answers, held.records, strict=True)]
    precision, recall = np.mean(scores, axis=0)
    return {"precision": float(precision), "recall": float(recall)}


def own_mistakes(model: Any, tokenizer: Any, patients: HeldOut, n: int) -> list[Sample]:
    """Preference pairs from the model's own mistakes, as RLHF collects them: up to n of its greedy
    explanations of `patients` that are not faithful (precision below 1: a rule the record lacks, or
    "no finding" where one holds) as the rejected answers, each against the faithful one (chosen)."""
    pairs: list[Sample] = []
    for prompt, record, answer in zip(patients.prompts, patients.records,
                                      explain(model, tokenizer, patients.prompts), strict=True):
        if len(pairs) < n and faithfulness(answer, record, patients.knowledge)[0] < 1:
            faithful = explanation(record, patients.knowledge, MOST)
            pairs.append(Sample(prompt, chosen=faithful, rejected=answer))
    return pairs
