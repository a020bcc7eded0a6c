"""The prompt wording, in one place.

The pocket LLM is pre-trained on these exact templates, the annotators ask them, and back-tuning
writes answers in the format the annotators parse. Change them here and nowhere else.
"""

from __future__ import annotations

from labkit.data.schema import Task

# SERVAL's soft-label prompt (Yan et al., 2024): the LLM states a probability.
PROBABILITY_QUESTION = (
    "Please predict the probability that {statement}: 0.0 means very unlikely, 1.0 means very likely."
)
# The hard-label prompt; its answer is one word, and P(Yes) is read from the first answer token.
YES_NO_QUESTION = "Is it likely that {statement}? Answer Yes or No."

YES, NO = "Yes", "No"
# The question whose answer names the record's findings that raise the risk, in the rules' words.
EXPLAIN_QUESTION = "Which findings in this record point to {condition}?"


def probability_prompt(text: str, task: Task) -> str:
    """The user message that asks for a probability about one record serialized as text."""
    return f"{text}\n\n{PROBABILITY_QUESTION.format(statement=task.statement)}"


def yes_no_prompt(text: str, task: Task) -> str:
    """The user message that asks for Yes or No about one record serialized as text."""
    return f"{text}\n\n{YES_NO_QUESTION.format(statement=task.statement)}"


def explain_prompt(text: str, condition: str) -> str:
    """The user message that asks which findings of one record point to the condition."""
    return f"{text}\n\n{EXPLAIN_QUESTION.format(condition=condition)}"


def probability_answer(p: float) -> str:
    """The answer text for a probability: two decimals, clipped to [0, 1], e.g. "0.72"."""
    return f"{min(max(float(p), 0.0), 1.0):.2f}"


def yes_no_answer(positive: bool) -> str:
    return YES if positive else NO
