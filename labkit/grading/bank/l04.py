"""Exercises of lesson 04 (back-tuning)."""

from __future__ import annotations

import numpy as np

from labkit.grading.exercise import Case, Exercise, case


def answer_texts(p: float) -> dict[str, str]:
    """Reference: the two answers the annotator parses: the probability with two decimals, clipped to
    [0, 1] ("0.73"), and "Yes" when p >= 0.5 else "No"."""
    return {"probability": f"{min(max(float(p), 0.0), 1.0):.2f}", "yes_no": "Yes" if p >= 0.5 else "No"}


def select_confident_rows(probs: list[float], threshold: float) -> list[int]:
    """Reference: rows with max(p, 1-p) >= threshold, the same number from each class (p >= 0.5 is
    class 1), keeping the most confident rows of the larger class (ties: the lower row first)."""
    p = np.asarray(probs, dtype=float)
    confidence = np.maximum(p, 1 - p)
    rows = {c: [i for i in range(len(p)) if (p[i] >= 0.5) == bool(c) and confidence[i] >= threshold]
            for c in (0, 1)}
    n = min(len(rows[0]), len(rows[1]))
    keep = []
    for c in (0, 1):
        keep += sorted(rows[c], key=lambda i: (-confidence[i], i))[:n]
    return sorted(keep)


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


def _hidden_select(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(8):
        n = int(rng.integers(5, 60))
        probs = np.round(rng.beta(0.4, 0.4, size=n), 3)
        cases.append(case([float(x) for x in probs], float(rng.choice([0.6, 0.8, 0.9, 0.95]))))
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
        id="04.select", function="select_confident_rows", tier="core", points=2,
        task="select_confident_rows(probs, threshold): sorted row indices with max(p, 1-p) >= threshold, "
             "as many from each class (p >= 0.5 is class 1) as the smaller class has, the most "
             "confident first (ties: lower index).",
        reference=select_confident_rows,
        examples=(case([0.97, 0.95, 0.6, 0.08, 0.93], 0.9), case([0.99, 0.01, 0.02, 0.5], 0.9)),
        hidden=_hidden_select,
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
