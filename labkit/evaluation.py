"""Multiple-choice evaluation by log-likelihood, as lm-evaluation-harness scores MMLU-style questions.

A question is asked once per option: the option is the assistant's whole answer (its end-of-turn
token included, so an option that would need more words does not win by stopping early), and its
score is log p(option | question), summed over its tokens. The model "answers" the option it finds
likeliest:

    accuracy        argmax of the summed log-likelihood
    accuracy_norm   argmax of the log-likelihood per character: long options pay for their length

Nothing is generated and nothing is parsed, so a model that cannot follow a format is still
measured. `rule_questions` builds a question set from the knowledge files: a synthetic patient's
record and "which one finding points to the condition?", with the strongest rule that holds
against rules that do not. The records are drawn fresh (the seed), and the question's wording is
not in the pocket LLM's corpus or back-tuning data: they ask "Which findings in this record point
to ...?", for every finding at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from labkit.chat import CausalLM, pad_token_id
from labkit.data import SCHEMAS, to_text

WHICH_ONE = "Which one of the findings in this record points to {condition}?"


@dataclass(frozen=True)
class Question:
    """A multiple-choice question: a prompt, its options, the index of the right one."""

    prompt: str
    options: tuple[str, ...]
    answer: int
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.options) < 2 or not 0 <= self.answer < len(self.options):
            raise ValueError(f"question from {self.source or 'an unnamed source'}: {len(self.options)} "
                             f"options and answer {self.answer}; give at least 2 options and an answer "
                             "index among them")


@dataclass(frozen=True)
class MultipleChoiceResult:
    """Accuracy by summed and by per-character log-likelihood, and each question's pick."""

    accuracy: float
    accuracy_norm: float
    n: int
    picked: tuple[int, ...]  # by summed log-likelihood
    picked_norm: tuple[int, ...]
    chance: float  # the mean of 1 / options: what guessing scores


def option_logprobs(model: CausalLM, tokenizer: Any, questions: Sequence[Question],
                    batch_size: int = 16) -> list[list[float]]:
    """log p(option | prompt) of every option of every question, the option being the whole answer."""
    from labkit.train.data import collate, encode
    from labkit.train.preference import sequence_logps

    pairs = [(q.prompt, option) for q in questions for option in q.options]
    device = next(model.parameters()).device
    scores: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(pairs), batch_size):
            examples = encode(tokenizer, pairs[start:start + batch_size], cutoff=1 << 20).examples
            batch = collate(examples, pad_token_id(tokenizer), device)
            with torch.no_grad():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            scores += sequence_logps(logits, batch["labels"]).tolist()
    finally:
        model.train(was_training)
    out, at = [], 0
    for q in questions:
        out.append(scores[at:at + len(q.options)])
        at += len(q.options)
    return out


def multiple_choice(model: CausalLM, tokenizer: Any, questions: Sequence[Question],
                    batch_size: int = 16) -> MultipleChoiceResult:
    """Accuracy of the model's likeliest option (ties: the first), summed and per character."""
    if not questions:
        raise ValueError("no questions to evaluate")
    logprobs = option_logprobs(model, tokenizer, questions, batch_size)
    picked = tuple(int(np.argmax(lp)) for lp in logprobs)
    picked_norm = tuple(int(np.argmax([s / max(len(o), 1) for s, o in zip(lp, q.options, strict=True)]))
                        for lp, q in zip(logprobs, questions, strict=True))
    answers = np.array([q.answer for q in questions])
    return MultipleChoiceResult(
        accuracy=float(np.mean(np.array(picked) == answers)),
        accuracy_norm=float(np.mean(np.array(picked_norm) == answers)), n=len(questions),
        picked=picked, picked_norm=picked_norm,
        chance=float(np.mean([1 / len(q.options) for q in questions])))


def rule_questions(task: str, n: int, seed: int, options: int = 4) -> list[Question]:
    """n questions on synthetic patients of `task` (see rule_question); records that make no
    question are skipped."""
    from labkit.pocket.knowledge import load_knowledge
    from labkit.pocket.patients import sample_patients

    knowledge = load_knowledge(task)
    rng = np.random.default_rng(seed)
    questions: list[Question] = []
    while len(questions) < n:
        for record in sample_patients(knowledge, SCHEMAS[task], n, rng):
            question = rule_question(record, task, rng, options)
            if question is not None and len(questions) < n:
                questions.append(question)
    return questions


def rule_question(record: dict[str, Any], task: str, rng: np.random.Generator, options: int = 4
                  ) -> Question | None:
    """The record and "which one finding points to the condition?": the right option is the
    strongest rule that holds, the others rules that do not hold (drawn by rng, as is the right
    option's place). None when no rule holds, or too few do not."""
    from labkit.pocket.corpus import citable_rules, fired_rules
    from labkit.pocket.knowledge import load_knowledge

    knowledge = load_knowledge(task)
    citable = citable_rules(knowledge)
    holding = fired_rules(record, knowledge)
    wrong = [r for r in citable if r not in holding]
    if not holding or len(wrong) < options - 1:
        return None
    choices = [wrong[i].text for i in rng.choice(len(wrong), size=options - 1, replace=False)]
    answer = int(rng.integers(options))
    choices.insert(answer, holding[0].text)
    prompt = f"{to_text(record, SCHEMAS[task])}\n\n{WHICH_ONE.format(condition=knowledge.condition)}"
    return Question(prompt, tuple(choices), answer, f"synthetic {task} patient")
