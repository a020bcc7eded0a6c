"""Chat encoding, shared by annotation, training and the server.

A model must be trained on the very token ids it reads at inference. So every path renders
messages the same way, here: the tokenizer's chat template, with the generation prompt for what
the model is asked, tokenized without extra special tokens (the template holds those it wants).

    prompt_text(tokenizer, messages)            # what the model reads before it answers
    split_turn(tokenizer, messages, answer)     # (that prompt, what the model is trained to write:
                                                #  the answer and the template's end-of-turn tokens)
    token_ids(tokenizer, texts)                 # ids, no special tokens added
    prompt_batch(tokenizer, conversations, device, max_length)   # left-padded, for scoring or
                                                # generating; a long prompt loses its start
    generation_config(...)                      # greedy or seeded sampling, nothing inherited
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig

IGNORE = -100  # label of a token that carries no loss (prompt and padding), as in PyTorch's cross_entropy
Messages = list[dict[str, str]]
# A transformers causal LM (PreTrainedModel), or a PEFT model wrapping one: both answer forward(),
# generate(), save_pretrained() and .config alike.
CausalLM = Any


def require_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{type(tokenizer).__name__} has no chat template: set tokenizer.chat_template "
                         "(a Jinja string) or load the instruct/chat version of the model.")


def prompt_text(tokenizer: Any, messages: Messages) -> str:
    """The conversation as the model reads it, ending with the assistant's header."""
    require_template(tokenizer)
    return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def split_turn(tokenizer: Any, messages: Messages, answer: str) -> tuple[str, str]:
    """(prompt_text, what follows it when the assistant answers `answer`): the answer and whatever
    the template closes the turn with, an end-of-turn token the model must learn to write."""
    prompt = prompt_text(tokenizer, messages)
    full = str(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}],
                                             tokenize=False))
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the conversation with a different prompt than "
                         "the generation prompt, so the answer cannot be told apart; use a template "
                         "whose generation prompt is a prefix of the full conversation.")
    return prompt, full[len(prompt):]


def token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of rendered texts, no special tokens added (the template already holds them)."""
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def pad_token_id(tokenizer: Any) -> int:
    """The pad id; a tokenizer without one pads with its end token. Padding carries no loss and no
    attention, so the choice changes no result."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError(f"{type(tokenizer).__name__} has neither a pad nor an end-of-sequence token: "
                     "set tokenizer.pad_token.")


def prompt_batch(tokenizer: Any, conversations: Sequence[Messages], device: torch.device,
                 max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Left-padded input ids and attention mask for a batch of conversations (each row ends at its
    answer position), and how many were cut: one longer than `max_length` tokens loses its *first*
    tokens, since its end holds the question and the answer position (SFT cuts a long prompt the
    same way, labkit.train.data.split_lengths)."""
    rows = token_ids(tokenizer, [prompt_text(tokenizer, m) for m in conversations])
    cut = sum(max_length is not None and len(r) > max_length for r in rows)
    if max_length is not None:
        rows = [r[-max_length:] for r in rows]
    width, pad = max(len(r) for r in rows), pad_token_id(tokenizer)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, mask, cut


def generation_config(model: Any, tokenizer: Any, max_new_tokens: int, temperature: float,
                      top_p: float = 1.0, logits: bool = False) -> GenerationConfig:
    """A fresh config: greedy when temperature is 0, else sampling; the model's own defaults
    (e.g. a sampling temperature in generation_config.json) do not leak in.
    logits=True makes generate() return a dict with the raw logits of every step."""
    own = getattr(model, "generation_config", None)
    eos = getattr(own, "eos_token_id", None) or tokenizer.eos_token_id
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id(tokenizer),
        eos_token_id=eos,
        return_dict_in_generate=logits,
        output_logits=logits,
        **(sampling if temperature > 0 else {"do_sample": False}),
    )
