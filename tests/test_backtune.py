"""Back-tuning examples are asked and answered exactly as the annotators ask and parse."""

from __future__ import annotations

import numpy as np
import pytest

import labkit.data as data
from labkit.annotate.parse import parse_probability, parse_yes_no
from labkit.backtune import backtune_examples
from labkit.prompts import probability_prompt, yes_no_prompt

TASK = data.SCHEMAS["pima"].task


def _texts(n: int) -> list[str]:
    return [f"Age: {20 + i} years" for i in range(n)]


def test_only_confident_rows_balanced_and_in_the_annotator_format() -> None:
    probs = np.array([0.97, 0.95, 0.93, 0.91, 0.6, 0.5, 0.4, 0.08, 0.03, 0.2])
    examples, selection = backtune_examples(_texts(10), probs, TASK, answers="both", min_per_class=1)
    assert selection.counts == {0: 2, 1: 2}  # two confident negatives -> two positives kept
    assert set(selection.indices) == {0, 1, 7, 8}  # the most confident positives
    assert len(examples) == 8
    for row in selection.indices:
        text, p = f"Age: {20 + row} years", probs[row]
        by_prompt = {e["prompt"]: e["answer"] for e in examples}
        answer = by_prompt[probability_prompt(text, TASK)]
        assert parse_probability(answer).value == pytest.approx(round(p, 2))
        assert parse_yes_no(by_prompt[yes_no_prompt(text, TASK)]).value == float(p >= 0.5)


@pytest.mark.parametrize(("answers", "prompt"), [("probability", probability_prompt),
                                                 ("yes_no", yes_no_prompt)])
def test_one_answer_kind(answers: str, prompt) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    probs = rng.random(200)
    examples, selection = backtune_examples(_texts(200), probs, TASK, answers=answers)  # type: ignore[arg-type]
    assert len(examples) == len(selection.indices)
    assert all(e["prompt"] == prompt(_texts(200)[r], TASK) for e, r in zip(examples, selection.indices,
                                                                              strict=True))
    assert (np.maximum(probs, 1 - probs)[selection.indices] >= 0.9).all()


def test_soft_answers_teach_every_row_its_probability_and_a_cap_keeps_whole_rows() -> None:
    probs = np.random.default_rng(1).random(50)
    texts = _texts(50)
    examples, selection = backtune_examples(texts, probs, TASK, answers="soft", threshold=0.5, balance="none")
    assert list(selection.indices) == list(range(50)) and len(examples) == 100
    for row, (yes, no) in enumerate(zip(examples[::2], examples[1::2], strict=True)):
        assert yes["prompt"] == no["prompt"] == yes_no_prompt(texts[row], TASK)
        assert parse_yes_no(yes["answer"]).value == 1 and parse_yes_no(no["answer"]).value == 0
        assert yes["weight"] == pytest.approx(probs[row]) and no["weight"] == pytest.approx(1 - probs[row])
    capped, _ = backtune_examples(texts, probs, TASK, answers="soft", threshold=0.5, balance="none",
                                  max_examples=21, seed=3)
    assert len(capped) == 20  # 10 whole rows: a row's two answers stay together
    assert all(a["prompt"] == b["prompt"] for a, b in zip(capped[::2], capped[1::2], strict=True))
    again, _ = backtune_examples(texts, probs, TASK, answers="soft", threshold=0.5, balance="none",
                                 max_examples=21, seed=3)
    assert again == capped


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="3 probabilities for 2 texts"):
        backtune_examples(_texts(2), np.array([0.1, 0.9, 0.5]), TASK)
    with pytest.raises(ValueError, match="NaN"):
        backtune_examples(_texts(2), np.array([0.1, np.nan]), TASK)
    with pytest.raises(ValueError, match="answers must be one of"):
        backtune_examples(_texts(2), np.array([0.1, 0.9]), TASK, answers="maybe")  # type: ignore[arg-type]


def test_a_shy_vertical_model_still_teaches_yes() -> None:
    """No probability reaches 0.5: the rows ranked highest are taught "Yes" (rank fallback)."""
    probs = np.linspace(0.01, 0.4, 30)
    texts = _texts(30)
    examples, selection = backtune_examples(texts, probs, TASK, answers="yes_no", min_per_class=3)
    yes = {e["prompt"] for e in examples if parse_yes_no(e["answer"]).value == 1}
    assert yes == {yes_no_prompt(texts[i], TASK) for i in (27, 28, 29)}
    assert selection.fallback
