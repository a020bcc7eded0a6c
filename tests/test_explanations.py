"""labkit.pocket.explanations: faithfulness scored against the knowledge rules, pairs that differ in it."""

from __future__ import annotations

import numpy as np
import pytest

from labkit.loader import load_model, load_tokenizer
from labkit.pocket.corpus import explanation, fired_rules
from labkit.pocket.explanations import (
    MOST,
    explain,
    faithfulness,
    held_out,
    held_out_pairs,
    mean_faithfulness,
    own_mistakes,
    preference_pairs,
    synthetic_records,
    unfaithful_explanation,
)


@pytest.fixture(scope="module")
def held() -> object:
    return held_out("pima", "val", n=24, seed=0)


def test_the_faithful_explanation_scores_one_and_the_unfaithful_one_less(held: object) -> None:
    rng = np.random.default_rng(0)
    scored = 0
    for record in held.records:  # type: ignore[attr-defined]
        if not fired_rules(record, held.knowledge):  # type: ignore[attr-defined]
            continue
        assert faithfulness(explanation(record, held.knowledge, MOST), record, held.knowledge) == (1.0, 1.0)
        precision, _ = faithfulness(unfaithful_explanation(record, held.knowledge, rng), record, held.knowledge)
        assert precision < 1.0
        scored += 1
    assert scored >= 10


def test_free_text_cites_nothing_checkable(held: object) -> None:
    record = held.records[0]  # type: ignore[attr-defined]
    assert faithfulness("The patient seems fine to me.", record, held.knowledge) == (0.0, 0.0)  # type: ignore[attr-defined]


def test_pairs_are_preference_samples_with_different_answers() -> None:
    pairs = preference_pairs("pima", 12, seed=0)
    assert len(pairs) == 12 and all(p.kind == "preference" and p.chosen != p.rejected for p in pairs)
    assert [p.prompt for p in pairs] == [p.prompt for p in preference_pairs("pima", 12, seed=0)]
    assert [p.prompt for p in pairs] != [p.prompt for p in preference_pairs("pima", 12, seed=1)]


def test_explain_answers_every_prompt_greedily(held: object) -> None:
    model, tokenizer = load_model(None), load_tokenizer(None)
    questions = held.prompts[:5]  # type: ignore[attr-defined]
    answers = explain(model, tokenizer, questions, max_new_tokens=40, batch_size=2)
    assert len(answers) == 5 and all(isinstance(a, str) and a for a in answers)
    assert explain(model, tokenizer, questions, max_new_tokens=40) == answers  # batching changes no answer
    subset = held_out("pima", "val", n=5, seed=0)
    scores = mean_faithfulness(answers, subset)
    assert 0.0 <= scores["precision"] <= 1.0 and 0.0 <= scores["recall"] <= 1.0
    with pytest.raises(ValueError, match="4 answers for 5"):
        mean_faithfulness(answers[:4], subset)


def test_synthetic_records_and_held_out_pairs_score_as_built() -> None:
    patients = synthetic_records("pima", 16, seed=0)
    assert len(patients.prompts) == len(patients.records) == 16
    assert synthetic_records("pima", 16, seed=0).prompts == patients.prompts
    pairs = held_out_pairs(patients, seed=0)
    chosen = mean_faithfulness([p.chosen or "" for p in pairs], patients)
    rejected = mean_faithfulness([p.rejected or "" for p in pairs], patients)
    assert chosen == {"precision": 1.0, "recall": 1.0}
    assert rejected["precision"] < 1.0


def test_own_mistakes_are_the_models_unfaithful_answers_against_faithful_ones() -> None:
    model, tokenizer = load_model(None), load_tokenizer(None)
    patients = synthetic_records("pima", 12, seed=0)
    pairs = own_mistakes(model, tokenizer, patients, n=100)
    answers = dict(zip(patients.prompts, explain(model, tokenizer, patients.prompts), strict=True))
    records = dict(zip(patients.prompts, patients.records, strict=True))
    wrong = [p for p, a in answers.items() if faithfulness(a, records[p], patients.knowledge)[0] < 1]
    assert [p.prompt for p in pairs] == wrong and wrong  # every mistake, in order, and there are some
    assert all(p.rejected == answers[p.prompt] for p in pairs)
    assert all(faithfulness(p.chosen or "", records[p.prompt], patients.knowledge)[0] == 1.0 for p in pairs)
    assert len(own_mistakes(model, tokenizer, patients, n=2)) == 2
