"""labkit.chat: the ids a model is trained on for a prompt are the ids it reads at inference."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig
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


# --- check_template: the train/inference mismatches LlamaFactory's users meet most ------------------

class _Model:
    """Stands in for a model: check_template reads its generation_config only."""

    def __init__(self, eos: int | list[int] | None) -> None:
        self.generation_config = GenerationConfig(eos_token_id=eos)


def test_the_template_check_passes_the_kit_and_the_pocket_llm() -> None:
    from labkit.loader import load_model, load_tokenizer

    tok = tiny_tokenizer()
    report = chat.check_template(tok, MESSAGES, "yes", model=_Model(tok.eos_token_id))
    assert report.ok, report.problems
    trained = encode(tok, [("is the patient sick ?", "yes")], cutoff=64).examples[0]
    assert trained.ids == report.prompt_ids + report.completion_ids  # what the kit trains on
    assert "OK: training and inference agree" in str(report)
    pocket = chat.check_template(load_tokenizer(), model=load_model())
    assert pocket.ok, pocket.problems
    assert "<|im_end|>" in pocket.tokens[len(pocket.prompt_ids):]


def test_the_template_check_catches_a_generation_eos_that_is_not_the_end_of_turn() -> None:
    tok = tiny_tokenizer()
    report = chat.check_template(tok, MESSAGES, "yes", model=_Model(tok.pad_token_id))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    [problem] = report.problems
    assert "close its turn with '<|im_end|>'" in problem and "['<pad>']" in problem
    assert f"eos_token_id = {end}" in problem  # the fix, with the id
    assert chat.check_template(tok, MESSAGES, "yes", model=_Model([tok.pad_token_id, end])).ok
    assert chat.stop_ids(_Model([]), tok) == (end,)  # an empty list: the tokenizer's end token, as for None


def test_the_template_check_catches_a_template_that_never_ends_the_turn() -> None:
    tok = tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}assistant {% endif %}")
    [problem] = chat.check_template(tok, MESSAGES, "yes").problems
    assert "no special token, so the model never learns to stop" in problem


def test_the_template_check_catches_training_data_rendered_with_another_template() -> None:
    tok = tiny_tokenizer()
    system = [{"role": "system", "content": "be brief"}]
    other = tiny_tokenizer()  # the same ChatML, but training added a system turn inference does not
    prompt, completion = chat.split_turn(other, system + MESSAGES, "yes")
    trained = chat.token_ids(other, [prompt])[0] + chat.token_ids(other, [completion])[0]
    [problem] = chat.check_template(tok, MESSAGES, "yes", trained_ids=trained).problems
    assert problem.startswith("the trained ids differ from what inference reads at token 1 of")
    assert "system be brief" in problem and "user is the" in problem
    assert chat.check_template(tok, system + MESSAGES, "yes", trained_ids=trained).ok
