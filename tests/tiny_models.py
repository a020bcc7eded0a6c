"""Tiny models for tests: a chat LLM whose Yes/No answers depend on the prompt, and a word-level
ChatML tokenizer whose ids are easy to read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from labkit.data.schema import Task
from labkit.prompts import probability_prompt, yes_no_prompt

TASK = Task(target="Outcome", positive=("1",), negative=("0",), positive_name="diabetes",
            negative_name="no diabetes", statement="this patient has diabetes", why="test")
TEXTS = [f"Glucose: {g} mg/dL\nAge: {a} years" for g, a in
         [(148, 50), (85, 31), (183, 32), (89, 21), (137, 33), (116, 30), (78, 26), (115, 29)]]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_chat_model(seed: int = 0, texts: Sequence[str] = TEXTS, task: Task = TASK,
                    yes_no_weight: int = 1) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random 1-layer Llama and a byte-level BPE tokenizer with a chat template.

    The output layer is rigged so that "Yes" and "No" are by far the likeliest next tokens, one
    or the other first depending on the prompt (rigged on `texts`, which it then splits on both
    sides of P(Yes) = 1/2): hard answers and P(Yes) then mean something.
    """
    corpus = [yes_no_prompt(t, task) for t in texts] + [probability_prompt(texts[0], task)]
    # yes_no_weight > 1 keeps Yes and No single tokens when `texts` are many and long
    corpus += ["Yes", "No"] * yes_no_weight + ["0.72", "0.15", "70%"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>"],
    )
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # The direction in which the prompts' final hidden states differ most (minus their
        # common part): P(Yes) then varies from prompt to prompt, on both sides of 1/2.
        states = torch.stack([model.model(input_ids=_chat_ids(tokenizer, yes_no_prompt(t, task))
                                          ).last_hidden_state[0, -1] for t in texts])
        mean = states.mean(0) / states.mean(0).norm()
        direction = torch.linalg.svd(states - states.mean(0)).Vh[0]
        direction -= (direction @ mean) * mean
        direction *= 3.0 / (states @ direction).abs().max()
        # plus a common part worth a logit of about 4, so that both stay far above the rest
        common = mean * 4.0 / (states @ mean).mean()
        model.lm_head.weight.zero_()
        model.lm_head.weight[tokenizer.convert_tokens_to_ids("Yes")] = common + direction
        model.lm_head.weight[tokenizer.convert_tokens_to_ids("No")] = common - direction
    return model, tokenizer


def _chat_ids(tokenizer: Any, user_message: str) -> torch.Tensor:
    """One prompt through the chat template, unpadded: the reference for batched code."""
    messages = [{"role": "user", "content": user_message}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
WORDS = ("user assistant system is the patient sick healthy yes no answer glucose high low age old young "
         "be brief 0 1 2 3 4 5 6 7 8 9 . ?").split()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS with a ChatML template (one token per word)."""
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="<|im_end|>", additional_special_tokens=SPECIALS[2:])
    tokenizer.chat_template = CHATML
    return tokenizer
