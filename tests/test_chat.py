"""labkit.chat: the ids a model is trained on for a prompt are the ids it reads at inference."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_tokenizer  # tests/ is on sys.path (conftest.py)

from labkit import chat
from labkit.train.data import encode

MESSAGES = [{"role": "user", "content": "is the patient sick ?"}]


def test_training_and_inference_read_the_same_prompt_ids() -> None:
    tok = tiny_tokenizer()
    trained = encode(tok, [("is the patient sick ?", "yes")], cutoff=64).examples[0]
    ids, mask, cut = chat.prompt_batch(tok, [MESSAGES], torch.device("cpu"))
    assert cut == 0 and mask.all()
    assert list(trained.ids[:trained.prompt_len]) == ids[0].tolist()


def test_the_answer_ends_with_the_end_of_turn_token_that_training_teaches() -> None:
    tok = tiny_tokenizer()
    prompt, answer = chat.split_turn(tok, MESSAGES, "yes")
    assert prompt.endswith("<|im_start|>assistant\n") and answer == "yes<|im_end|>\n"
    trained = encode(tok, [("is the patient sick ?", "yes")], cutoff=64).examples[0]
    learned = tok.convert_ids_to_tokens(list(trained.ids[trained.prompt_len:]))
    assert learned[:2] == ["yes", "<|im_end|>"]


def test_a_batch_is_left_padded_and_a_long_prompt_loses_its_start() -> None:
    tok = tiny_tokenizer()
    short, long = MESSAGES, [{"role": "user", "content": "old " * 20 + "sick ?"}]
    ids, mask, cut = chat.prompt_batch(tok, [short, long], torch.device("cpu"), max_length=12)
    assert cut == 1 and ids.shape[1] == 12
    full = chat.token_ids(tok, [chat.prompt_text(tok, long)])[0]
    assert ids[1].tolist() == full[-12:]  # the end (question and answer position) is kept
    n_short = len(chat.token_ids(tok, [chat.prompt_text(tok, short)])[0])
    assert mask[0].tolist() == [0] * (12 - n_short) + [1] * n_short
    assert (ids[0, : 12 - n_short] == chat.pad_token_id(tok)).all()


def test_a_template_whose_prompt_is_not_a_prefix_is_refused() -> None:
    tok = tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant ?{% endif %}")
    with pytest.raises(ValueError, match="different prompt than the generation prompt"):
        chat.split_turn(tok, MESSAGES, "yes")
    with pytest.raises(ValueError, match="example 0: the chat template renders"):
        encode(tok, [("is the patient sick ?", "yes")], cutoff=64)


def test_no_template_and_no_pad_token_are_errors_that_say_what_to_set() -> None:
    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template: set tokenizer.chat_template"):
        chat.prompt_text(tok, MESSAGES)
    tok = tiny_tokenizer()
    tok.pad_token = None
    assert chat.pad_token_id(tok) == tok.eos_token_id  # the end token pads
    tok.eos_token = None
    with pytest.raises(ValueError, match="set tokenizer.pad_token"):
        chat.pad_token_id(tok)


def test_generation_is_greedy_at_temperature_zero_and_ignores_the_models_defaults() -> None:
    tok = tiny_tokenizer()
    greedy = chat.generation_config(None, tok, max_new_tokens=3, temperature=0.0)
    assert greedy.do_sample is False and greedy.max_new_tokens == 3
    assert greedy.pad_token_id == tok.pad_token_id and greedy.eos_token_id == tok.eos_token_id
    sampled = chat.generation_config(None, tok, max_new_tokens=3, temperature=0.7, top_p=0.9)
    assert sampled.do_sample and sampled.temperature == 0.7 and sampled.top_k == 0
