"""Back-tuning data: the vertical model teaches the LLM, in the LLM's own question format.

SERVAL's third step fine-tunes the LLM on what the vertical model learned. The examples are built
from the vertical model's probabilities on the (unlabeled) training split, with exactly the prompts
the annotators ask (labkit.prompts) and answers in the format their parsers read, so that the next
annotation round asks the tuned model the very question it was tuned on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from labkit.data.schema import Task
from labkit.noisy.selection import Balance, Selection, select_confident
from labkit.prompts import probability_answer, probability_prompt, yes_no_answer, yes_no_prompt

Answers = Literal["probability", "yes_no", "both", "soft"]
ANSWERS: tuple[str, ...] = ("probability", "yes_no", "both", "soft")


def backtune_examples(
    texts: Sequence[str],
    probs: np.ndarray,
    task: Task,
    *,
    answers: Answers = "both",
    threshold: float = 0.9,
    balance: Balance = "equal",
    min_per_class: int = 10,
    max_examples: int | None = None,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], Selection]:
    """(prompt, answer) pairs from the vertical model's confident predictions.

    texts: the records as the annotator serializes them; probs: the vertical model's P(positive)
    for the same rows. Only rows at least `threshold` confident are used, balanced between the
    classes (labkit.noisy.select_confident). answers: "probability" teaches the SERVAL prompt with
    the vertical model's probability ("0.93"), "yes_no" teaches the Yes/No prompt (which token-mode
    P(Yes) reads), "both" gives one example of each per selected row, "soft" teaches the Yes/No
    prompt the vertical model's probability itself: the answers Yes and No, weighted p and 1 - p
    (labkit.train's example weights), whose loss is the cross-entropy with the soft label.
    max_examples: a cap; a seeded random subset of the selected rows is taught, each row with all
    its examples (a soft label's two answers stay together).
    Returns the examples (mappings with "prompt", "answer" and, for soft answers, "weight", as
    labkit.train takes them) and the selection, whose counts the SERVAL loop records.
    """
    if answers not in ANSWERS:
        raise ValueError(f"answers must be one of {ANSWERS}, got {answers!r}")
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) != len(texts):
        raise ValueError(f"{len(probs)} probabilities for {len(texts)} texts")
    if not np.isfinite(probs).all():
        raise ValueError("probs contains NaN or infinity: the vertical model must score every row")
    selection = select_confident(probs, threshold, balance=balance, min_per_class=min_per_class)
    pairs = list(zip(selection.indices, selection.labels, strict=True))
    per_row = 2 if answers in ("both", "soft") else 1
    if max_examples is not None and len(pairs) * per_row > max_examples:
        keep = np.random.default_rng(seed).choice(len(pairs), size=max_examples // per_row, replace=False)
        pairs = [pairs[i] for i in np.sort(keep)]
    examples: list[dict[str, Any]] = []
    # a row's class is its side of 0.5, unless the selection's rank fallback made it stand for
    # the class no row leaned to (then its probability answer stays the model's own number)
    for row, label in pairs:
        p, text = float(probs[row]), texts[row]
        if answers in ("probability", "both"):
            examples.append({"prompt": probability_prompt(text, task), "answer": probability_answer(p)})
        if answers in ("yes_no", "both"):
            examples.append({"prompt": yes_no_prompt(text, task), "answer": yes_no_answer(label == 1)})
        if answers == "soft":
            prompt = yes_no_prompt(text, task)
            examples += [{"prompt": prompt, "answer": yes_no_answer(True), "weight": p},
                         {"prompt": prompt, "answer": yes_no_answer(False), "weight": 1 - p}]
    return examples, selection
