"""labkit.evaluation: multiple choice by log-likelihood, BLEU / ROUGE and calibration on values worked out
by hand, and the suite's table on a tiny model and on the pocket LLM."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch
from test_sft import tiny_llama
from tiny_models import tiny_chat_model, tiny_tokenizer

from labkit.chat import prompt_batch
from labkit.evaluation import (
    BENCHMARKS,
    Question,
    Suite,
    calibration_records,
    calibration_scores,
    compare,
    evaluate,
    explanation_set,
    generation_scores,
    multiple_choice,
    option_logprobs,
    probability_answers,
    questions,
    rule_question,
    rule_questions,
)
from labkit.loader import load_model, load_tokenizer
from labkit.pocket.knowledge import load_knowledge
from labkit.prompts import EXPLAIN_QUESTION


def test_an_options_score_is_its_tokens_log_likelihood_after_the_question() -> None:
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    question = Question("is it ?", ("yes", "no no"), answer=0)
    scores = option_logprobs(model, tokenizer, [question])[0]
    for option, score in zip(question.options, scores, strict=True):
        messages = [{"role": "user", "content": question.prompt}]
        prompt_ids, _, _ = prompt_batch(tokenizer, [messages], torch.device("cpu"))
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": option}],
                                             tokenize=False)
        ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
        start = prompt_ids.shape[1]
        answer_end = start + len(tokenizer(option + "<|im_end|>", add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0].log_softmax(-1)
        expected = sum(logp[t - 1, ids[0, t]].item() for t in range(start, answer_end))
        assert score == pytest.approx(expected, abs=1e-4)


def test_the_pick_is_the_likeliest_option_and_per_character_norm_can_differ() -> None:
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    questions = [Question("is it ?", ("yes", "no no no no no"), answer=1),
                 Question("why ?", ("be", "brief", "old"), answer=2)]
    scores = option_logprobs(model, tokenizer, questions)
    result = multiple_choice(model, tokenizer, questions, batch_size=2)
    assert list(result.picked) == [max(range(len(s)), key=s.__getitem__) for s in scores]
    assert result.accuracy == sum(p == q.answer for p, q in zip(result.picked, questions, strict=True)) / 2
    assert result.chance == pytest.approx((1 / 2 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="at least 2 options"):
        Question("?", ("only",), answer=0)


def test_rule_questions_have_one_option_that_holds_at_a_seeded_place() -> None:
    knowledge = load_knowledge("pima")
    questions = rule_questions("pima", 40, seed=0)
    assert questions == rule_questions("pima", 40, seed=0) and questions != rule_questions("pima", 40, seed=1)
    assert len({q.answer for q in questions}) == 4  # the right option is not always first
    for q in questions:
        assert EXPLAIN_QUESTION.format(condition=knowledge.condition) not in q.prompt  # not the corpus's
        rules = {r.text for r in knowledge.rules}
        assert len(set(q.options)) == 4 and set(q.options) <= rules


def test_a_rule_questions_right_option_holds_for_its_record_and_no_other_does() -> None:
    import numpy as np

    from labkit.data import SCHEMAS
    from labkit.pocket.corpus import fired_rules
    from labkit.pocket.patients import sample_patients

    knowledge, rng = load_knowledge("pima"), np.random.default_rng(0)
    made = 0
    for record in sample_patients(knowledge, SCHEMAS["pima"], 30, rng):
        question = rule_question(record, "pima", rng)
        holding = {r.text for r in fired_rules(record, knowledge)}
        if question is None:
            assert not holding or len(knowledge.rules) - len(holding) < 3
            continue
        made += 1
        assert [o in holding for o in question.options] == [i == question.answer for i in range(4)]
    assert made >= 20


def test_the_pocket_llm_beats_chance_on_rule_questions() -> None:
    questions = rule_questions("pima", 48, seed=7)
    result = multiple_choice(load_model(None), load_tokenizer(None), questions)
    assert result.n == 48 and result.chance == 0.25
    assert result.accuracy > 0.4, result  # it was taught these rules; guessing scores 0.25
    assert all(isinstance(p, int) for p in result.picked_norm)


# --- generated answers: BLEU and ROUGE against values worked out by hand ---------------------------

def test_bleu_is_corpus_bleu_on_0_to_100_worked_out_by_hand() -> None:
    # "glucose is high and rising" against "... falling": 4/5 words, 3/4 bigrams, 2/3 trigrams, 1/2
    # 4-grams match; the lengths are equal, so no brevity penalty: BLEU = 100 (4/5 3/4 2/3 1/2)^(1/4)
    one = generation_scores(["glucose is high and rising"], ["glucose is high and falling"])
    assert one["bleu"] == pytest.approx(100 * 0.2 ** 0.25)
    # corpus BLEU sums the matches before dividing (not a mean of sentence BLEUs): with "age is old"
    # answered exactly, 7/8, 5/6, 3/4 and 1/2 (no 4-gram in three words)
    two = generation_scores(["glucose is high and rising", "age is old"],
                            ["glucose is high and falling", "age is old"])
    assert two["bleu"] == pytest.approx(100 * (7 / 8 * 5 / 6 * 3 / 4 * 1 / 2) ** 0.25)
    # every n-gram matches but the answer is 4 words for a 6-word reference: exp(1 - 6/4)
    short = generation_scores(["glucose is high and"], ["glucose is high and rising fast"])
    assert short["bleu"] == pytest.approx(100 * math.exp(1 - 6 / 4))


def test_rouge_is_the_mean_f_measure_worked_out_by_hand() -> None:
    # 4 answer words, 6 reference words; unigrams shared: old, age, high, glucose (4); bigrams shared:
    # "old age" (1 of 3 and 1 of 5); longest common subsequence: "old age" or "glucose high" (2)
    answer, reference = "old age high glucose", "glucose is high and old age"
    scores = generation_scores([answer, "age is old"], [reference, "age is old"])
    f1 = 2 * 4 / (4 + 6)
    f2 = 2 * (1 / 3) * (1 / 5) / (1 / 3 + 1 / 5)
    fl = 2 * 2 / (4 + 6)
    assert scores["rouge1"] == pytest.approx((f1 + 1) / 2)
    assert scores["rouge2"] == pytest.approx((f2 + 1) / 2)
    assert scores["rougeL"] == pytest.approx((fl + 1) / 2)


def _lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_rouge_l_is_the_longest_common_subsequence_f_measure() -> None:
    rng = random.Random(0)
    words = "yes no high low old young age sick".split()
    for _ in range(20):
        answer = [rng.choice(words) for _ in range(rng.randint(1, 9))]
        reference = [rng.choice(words) for _ in range(rng.randint(1, 9))]
        common = _lcs(answer, reference)
        expected = 2 * common / (len(answer) + len(reference))
        got = generation_scores([" ".join(answer)], [" ".join(reference)], stem=False)["rougeL"]
        assert got == pytest.approx(expected), (answer, reference)


def test_rouge_stems_words_unless_told_not_to() -> None:
    answer, reference = ["the risk rises"], ["the risk rising"]
    assert generation_scores(answer, reference)["rouge1"] == pytest.approx(1.0)  # both "rise" (Porter)
    assert generation_scores(answer, reference, stem=False)["rouge1"] == pytest.approx(2 / 3)


def test_generation_scores_refuse_inputs_that_do_not_pair_up() -> None:
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        generation_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no hypotheses"):
        generation_scores([], [])
    with pytest.raises(ValueError, match="not one string"):
        generation_scores("an answer", "a reference")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"items \[1\] are not strings"):
        generation_scores(["a", None], ["a", "b"])  # type: ignore[list-item]
    assert generation_scores([""], ["glucose is high"])["rougeL"] == 0.0  # an empty answer scores 0


# --- calibration: parse failures counted --------------------------------------------------------------

def test_calibration_counts_parse_failures_and_scores_the_answered_records_by_hand() -> None:
    labels = [0, 1, 1, 0, 1, 0]
    probabilities = [0.2, math.nan, 0.9, 0.4, math.nan, 0.1]
    scores = calibration_scores(labels, probabilities)
    assert scores["answered"] == 4 and scores["parse_failures"] == 2
    # the answered: (0, 0.2), (1, 0.9), (0, 0.4), (0, 0.1), each alone in its bin of width 0.1
    assert scores["ece"] == pytest.approx((0.2 + 0.1 + 0.4 + 0.1) / 4)
    assert scores["brier"] == pytest.approx((0.04 + 0.01 + 0.16 + 0.01) / 4)
    assert scores["auc"] == 1.0 and scores["accuracy"] == 1.0
    one_class = calibration_scores([0, 1, 0], [0.3, math.nan, 0.6])
    assert math.isnan(one_class["auc"]) and one_class["ece"] == pytest.approx((0.3 + 0.6) / 2)
    none = calibration_scores([0, 1], [math.nan, math.nan])
    assert none["parse_failures"] == 2
    assert all(math.isnan(none[k]) for k in ("ece", "auc", "brier", "accuracy"))
    with pytest.raises(ValueError, match="one probability"):
        calibration_scores([0, 1], [0.5])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        calibration_scores([0, 2], [0.5, 0.5])


# --- the suite ----------------------------------------------------------------------------------------

def test_a_suite_refuses_bad_values_and_fast_caps_the_sizes() -> None:
    for bad, field in [(dict(task="abstracts"), "task"), (dict(task="nope"), "task"),
                       (dict(benchmarks=["bleu"]), "benchmarks"), (dict(benchmarks=[]), "benchmarks"),
                       (dict(benchmarks=["explanations"] * 2), "benchmarks"),
                       (dict(n_questions=0), "n_questions"), (dict(threads=0), "threads")]:
        with pytest.raises(ValueError, match=f"Suite.{field}="):
            Suite(**bad)  # type: ignore[arg-type]
    fast = Suite(fast=True, n_questions=4)
    assert (fast.n_questions, fast.n_explanations, fast.n_records) == (4, 16, 32)
    assert all(f.metadata["help"] for f in dataclasses.fields(Suite))


def test_the_suites_records_are_seeded_and_never_those_of_the_training_recipes() -> None:
    from labkit.pocket.explanations import preference_pairs, synthetic_records

    suite = Suite(n_questions=24, n_explanations=24, n_records=40)
    asked = ([q.prompt.split("\n\n")[0] for q in questions(suite)]
             + [p.split("\n\n")[0] for p in explanation_set(suite)[0].prompts])
    assert asked == ([q.prompt.split("\n\n")[0] for q in questions(Suite(n_questions=24))]
                     + [p.split("\n\n")[0] for p in explanation_set(Suite(n_explanations=24))[0].prompts])
    assert explanation_set(suite)[0].prompts != explanation_set(Suite(n_explanations=24, seed=1))[0].prompts
    trained: set[str] = set()
    for seed in (0, 1, 2):  # lesson 09 and the benchmarks: SFT pairs (seed), DPO prompts (seed + 500)
        trained |= {p.prompt.split("\n\n")[0] for p in preference_pairs("pima", 24, seed)}
        trained |= {p.split("\n\n")[0] for p in synthetic_records("pima", 72, seed + 500).prompts}
    assert not trained & set(asked)
    # the control: questions drawn with a plain integer seed are the SFT pairs' own records
    plain = {q.prompt.split("\n\n")[0] for q in rule_questions("pima", 24, seed=0)}
    assert len(plain & trained) > 10
    texts, labels = calibration_records(suite)
    assert len(texts) == len(labels) == 40 and set(labels) == {0, 1}
    assert calibration_records(Suite(n_records=1000))[0].__len__() == 154  # the whole validation split


@pytest.mark.filterwarnings("ignore:.*lost their first tokens")  # the tiny model's 256 positions
def test_the_table_counts_a_models_parse_failures_and_matches_the_metrics() -> None:
    from labkit import metrics

    model, tokenizer = tiny_chat_model()  # answers Yes or No, never a number
    suite = Suite(benchmarks=["calibration_verbalized", "calibration_token"], n_records=12, progress=False,
                  threads=1)
    with pytest.warns(UserWarning, match="12 of 12 answers are missing"):
        table = evaluate(model, tokenizer, suite)
    value = table.set_index(["benchmark", "metric"])["value"]
    assert value["calibration_verbalized", "parse_failures"] == 12
    assert value["calibration_verbalized", "answered"] == 0
    assert math.isnan(value["calibration_verbalized", "ece"])
    frame = probability_answers(model, tokenizer, suite, "token")
    assert value["calibration_token", "parse_failures"] == 0
    assert value["calibration_token", "ece"] == pytest.approx(metrics.ece(frame["label"], frame["value"]))
    assert value["calibration_token", "auc"] == pytest.approx(metrics.auc(frame["label"], frame["value"]))
    assert value["calibration_token", "brier"] == pytest.approx(metrics.brier(frame["label"], frame["value"]))
    assert set(table["n"]) == {12}


@pytest.mark.slow
def test_the_pocket_llms_table_is_tidy_and_the_same_seed_gives_the_same_numbers() -> None:
    model, tokenizer = load_model(None), load_tokenizer(None)
    suite = Suite(n_questions=8, n_explanations=8, n_records=24, progress=False, threads=1)
    table = evaluate(model, tokenizer, suite)
    assert list(table.columns) == ["benchmark", "metric", "value", "n"]
    assert list(table["benchmark"].unique()) == list(BENCHMARKS)
    assert table.groupby("benchmark", sort=False)["n"].first().tolist() == [8, 8, 24, 24]
    assert len(table) == 3 + 6 + 6 + 6 and not table["value"].isna().any()
    value = table.set_index(["benchmark", "metric"])["value"]
    assert 0 < value["explanations", "bleu"] <= 100 and 0 < value["explanations", "rougeL"] <= 1
    asked = value["calibration_verbalized", "answered"] + value["calibration_verbalized", "parse_failures"]
    assert asked == 24
    assert set(table.attrs["seconds"]) == set(BENCHMARKS)
    side = compare({"a": model, "b": model}, tokenizer, suite)
    assert list(side.columns) == ["benchmark", "metric", "n", "a", "b"]
    assert side["a"].tolist() == side["b"].tolist() == table["value"].tolist()  # same seed, same numbers


def test_compare_refuses_no_models_and_names_that_are_columns() -> None:
    with pytest.raises(ValueError, match="name one model or more"):
        compare({}, None, Suite(progress=False))
    with pytest.raises(ValueError, match="none called"):
        compare({"n": None}, None, Suite(progress=False))  # type: ignore[dict-item]
