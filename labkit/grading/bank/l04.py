"""Exercises of lesson 04 (back-tuning)."""

from __future__ import annotations

import numpy as np

from labkit.grading.exercise import Case, Exercise, case


def answer_texts(p: float) -> dict[str, str]:
    """Reference: the two answers the annotator parses: the probability with two decimals, clipped to
    [0, 1] ("0.73"), and "Yes" when p >= 0.5 else "No"."""
    return {"probability": f"{min(max(float(p), 0.0), 1.0):.2f}", "yes_no": "Yes" if p >= 0.5 else "No"}


def soft_answer_loss(logits: np.ndarray, yes_ids: list[int], no_ids: list[int],
                     targets: list[float]) -> float:
    """Reference: the back-tuning loss of soft answers, averaged over the rows. Row i teaches the
    answer Yes with weight t_i and No with weight 1 - t_i, so its loss is
    -(t_i log P(Yes) + (1 - t_i) log P(No)), where P(Yes) is the probability, over the whole
    vocabulary, of any of the token ids that spell Yes (likewise No). Computed with log-sum-exp, so
    large logits neither overflow nor underflow."""
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=float)
    t = np.asarray(targets, dtype=float)
    total = logsumexp(z, axis=1)
    log_yes = logsumexp(z[:, list(yes_ids)], axis=1) - total
    log_no = logsumexp(z[:, list(no_ids)], axis=1) - total
    return float(np.mean(-(t * log_yes + (1 - t) * log_no)))


def answer_only_labels(input_ids: list[list[int]], answer_starts: list[int],
                       lengths: list[int]) -> list[list[int]]:
    """Reference: labels for causal-LM training with the loss on the answer only: -100 on the prompt
    positions (before answer_start) and on the padding (from the row's length on), the token id
    elsewhere. Padding is found by position, not by id: many tokenizers pad with their end token,
    and masking that id would also mask the answer's own end, so the model never learns to stop."""
    return [[-100 if (j < start or j >= length) else token for j, token in enumerate(row)]
            for row, start, length in zip(input_ids, answer_starts, lengths, strict=True)]


def _hidden_answer(rng: np.random.Generator) -> list[Case]:
    values = [0.0, 1.0, 0.5, 0.499, 0.005, 0.995, 1.3, -0.2] + list(rng.random(8))
    # the visible examples' outputs (0.73, 0.31) are left out, so copying them earns nothing
    return [case(float(v)) for v in values if round(float(v), 2) not in (0.73, 0.31)]


def _hidden_soft(rng: np.random.Generator) -> list[Case]:
    """Rows of logits over a small vocabulary, Yes spelled by one to three ids, No by one or two;
    some cases with logits in the hundreds (a naive softmax overflows there), targets 0, 1 and between."""
    cases = []
    for k in range(8):
        rows, vocab = int(rng.integers(1, 6)), int(rng.integers(6, 30))
        ids = rng.permutation(vocab)
        yes, no = ids[: int(rng.integers(1, 4))], ids[3:3 + int(rng.integers(1, 3))]
        logits = rng.normal(0, 3, size=(rows, vocab)) + (800.0 if k % 3 == 2 else 0.0)
        targets = np.round(rng.random(rows), 3)
        targets[0] = float(k % 2) if k < 2 else targets[0]  # a row taught a plain Yes or No
        cases.append(case(logits, [int(i) for i in yes], [int(i) for i in no], [float(t) for t in targets]))
    return cases


def _hidden_mask(rng: np.random.Generator) -> list[Case]:
    """Rows that end with the end token (id 2), padded on the right with the same id (pad == EOS)."""
    cases = []
    for _ in range(6):
        rows, starts, lengths = [], [], []
        width = int(rng.integers(4, 12))
        for _ in range(int(rng.integers(1, 5))):
            length = int(rng.integers(2, width + 1))
            ids = [int(t) for t in rng.integers(3, 500, size=length - 1)] + [2] * (width - length + 1)
            rows.append(ids)
            starts.append(int(rng.integers(1, length)))
            lengths.append(length)
        cases.append(case(rows, starts, lengths))
    return cases


EXERCISES = [
    Exercise(
        id="04.answer", function="answer_texts", tier="warm-up", points=1,
        task="answer_texts(p) -> {'probability': two decimals clipped to [0, 1], e.g. '0.73', "
             "'yes_no': 'Yes' when p >= 0.5 else 'No'}: the answers the annotator's parsers read.",
        reference=answer_texts,
        examples=(case(0.734), case(0.31)),
        hidden=_hidden_answer,
    ),
    Exercise(
        id="04.soft", function="soft_answer_loss", tier="core", points=2,
        task="soft_answer_loss(logits, yes_ids, no_ids, targets): the mean over rows of "
             "-(t log P(Yes) + (1 - t) log P(No)), with P(Yes) the softmax probability over the whole "
             "vocabulary of all of yes_ids (likewise No), from logits (rows x vocabulary) at the answer "
             "position; stable for large logits (log-sum-exp).",
        reference=soft_answer_loss,
        examples=(case(np.array([[2.0, 0.0, 1.0, -1.0]]), [0], [2], [0.75]),
                  case(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), [0, 1], [2], [1.0, 0.2])),
        hidden=_hidden_soft,
    ),
    Exercise(
        id="04.mask", function="answer_only_labels", tier="stretch", points=3,
        task="answer_only_labels(input_ids, answer_starts, lengths): per row, -100 before "
             "answer_start and from the row's length on (padding), the token id elsewhere, the "
             "answer's end token included (the loss then covers the answer and its end).",
        reference=answer_only_labels,
        examples=(case([[5, 6, 7, 2, 2], [5, 9, 10, 2, 2]], [2, 2], [4, 3]),),
        hidden=_hidden_mask,
    ),
]
