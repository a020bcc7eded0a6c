"""labkit.evaluation: multiple choice by log-likelihood, on hand-computed values and on the pocket LLM."""

from __future__ import annotations

import pytest
import torch
from test_sft import tiny_llama
from tiny_models import tiny_tokenizer

from labkit.chat import prompt_batch
from labkit.evaluation import Question, multiple_choice, option_logprobs, rule_question, rule_questions
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
    assert result.accuracy == sum(p == q.answer for p, q in zip(result.picked, questions)) / 2
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
