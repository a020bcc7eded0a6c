"""Back-tuning data: the vertical model teaches the LLM, in the LLM's own question format.

SERVAL's third step fine-tunes the LLM on what the vertical model learned. The examples are built
from the vertical model's probabilities on the (unlabeled) training split, with exactly the prompts
the annotators ask (labkit.prompts) and answers in the format their parsers read, so that the next
annotation round asks the tuned model the very question it was tuned on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from labkit.data.schema import Task
from labkit.noisy.selection import Balance, Selection, select_confident
from labkit.prompts import probability_answer, probability_prompt, yes_no_answer, yes_no_prompt

Answers = Literal["probability", "yes_no", "both"]
ANSWERS: tuple[str, ...] = ("probability", "yes_no", "both")


def backtune_examples(
    texts: Sequence[str],
    probs: np.ndarray,
    task: Task,
    *,
    answers: Answers = "both",
    threshold: float = 0.9,
    balance: Balance = "equal",
    min_per_class: int = 10,
) -> tuple[list[dict[str, str]], Selection]:
    """(prompt, answer) pairs from the vertical model's confident predictions.

    texts: the records as the annotator serializes them; probs: the vertical model's P(positive)
    for the same rows. Only rows at least `threshold` confident are used, balanced between the
    classes (labkit.noisy.select_confident). answers: "probability" teaches the SERVAL prompt with
    the vertical model's probability ("0.93"), "yes_no" teaches the Yes/No prompt (which token-mode
    P(Yes) reads), "both" gives one example of each per selected row.
    Returns the examples (mappings with "prompt" and "answer", as labkit.train takes them) and the
    selection, whose counts the SERVAL loop records.
    """
    if answers not in ANSWERS:
        raise ValueError(f"answers must be one of {ANSWERS}, got {answers!r}")
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) != len(texts):
        raise ValueError(f"{len(probs)} probabilities for {len(texts)} texts")
    if not np.isfinite(probs).all():
        raise ValueError("probs contains NaN or infinity: the vertical model must score every row")
    selection = select_confident(probs, threshold, balance=balance, min_per_class=min_per_class)
    examples = []
    # a row's class is its side of 0.5, unless the selection's rank fallback made it stand for
    # the class no row leaned to (then its probability answer stays the model's own number)
    for row, label in zip(selection.indices, selection.labels, strict=True):
        p, text = float(probs[row]), texts[row]
        if answers in ("probability", "both"):
            examples.append({"prompt": probability_prompt(text, task), "answer": probability_answer(p)})
        if answers in ("yes_no", "both"):
            examples.append({"prompt": yes_no_prompt(text, task), "answer": yes_no_answer(label == 1)})
    return examples, selection
