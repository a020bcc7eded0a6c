"""Chat encoding, shared by annotation, training and the server.

A model must be trained on the very token ids it reads at inference. So every path renders
messages the same way, here: the tokenizer's chat template, with the generation prompt for what
the model is asked, tokenized without extra special tokens (the template holds those it wants).

    prompt_messages(system, turns, prompt)      # system, earlier (user, assistant) turns, the prompt
    prompt_text(tokenizer, messages)            # what the model reads before it answers
    split_turn(tokenizer, messages, answer)     # (that prompt, what the model is trained to write:
                                                #  the answer and the template's end-of-turn tokens)
    token_ids(tokenizer, texts)                 # ids, no special tokens added
    prompt_batch(tokenizer, conversations, device, max_length)   # left-padded, for scoring or
                                                # generating; a long prompt loses its start
    generation_config(...)                      # greedy or seeded sampling, nothing inherited
    check_template(tokenizer, model=model)      # what training teaches against what inference reads
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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


def prompt_messages(system: str | None, turns: Sequence[tuple[str, str]], prompt: str) -> Messages:
    """The messages a model reads before it answers: the system message (if any), each earlier
    (user, assistant) turn, then the user's prompt."""
    out: Messages = [{"role": "system", "content": system}] if system else []
    for user, answer in turns:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return out + [{"role": "user", "content": prompt}]


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


def generate_replies(model: Any, tokenizer: Any, conversations: Sequence[Messages], max_new_tokens: int = 100,
                     batch_size: int = 32) -> list[str]:
    """The model's greedy replies to conversations (each ends with a user turn), decoded without
    special tokens and stripped; the model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    greedy = generation_config(model, tokenizer, max_new_tokens, 0.0)
    replies: list[str] = []
    try:
        for start in range(0, len(conversations), batch_size):
            ids, mask, _ = prompt_batch(tokenizer, conversations[start:start + batch_size], device)
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=greedy)
            texts = tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
            replies += [t.strip() for t in texts]
    finally:
        model.train(was_training)
    return replies


def stop_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """The ids that end generation: the model's generation_config.eos_token_id (one id or a list),
    else the tokenizer's end token."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None or (isinstance(eos, list | tuple) and not eos):  # an empty list names no end either
        eos = tokenizer.eos_token_id
    if eos is None:
        return ()
    return tuple(int(i) for i in eos) if isinstance(eos, list | tuple) else (int(eos),)


def generation_config(model: Any, tokenizer: Any, max_new_tokens: int, temperature: float,
                      top_p: float = 1.0, logits: bool = False) -> GenerationConfig:
    """A fresh config: greedy when temperature is 0, else sampling; the model's own defaults
    (e.g. a sampling temperature in generation_config.json) do not leak in.
    logits=True makes generate() return a dict with the raw logits of every step."""
    stops = stop_ids(model, tokenizer)
    eos = list(stops) if len(stops) > 1 else (stops[0] if stops else None)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id(tokenizer),
        eos_token_id=eos,
        return_dict_in_generate=logits,
        output_logits=logits,
        **(sampling if temperature > 0 else {"do_sample": False}),
    )


# --- the template check ------------------------------------------------------------------------

PROBE = [{"role": "user", "content": "Is the sky blue? Answer Yes or No."}]


@dataclass(frozen=True)
class TemplateCheck:
    """One conversation as training teaches it and as inference reads it (see check_template)."""

    prompt_ids: tuple[int, ...]  # what the model reads before it answers, at training and at inference
    completion_ids: tuple[int, ...]  # what training teaches it to write: the answer and the end of turn
    stop_ids: tuple[int, ...]  # the ids that end generation at inference
    tokens: tuple[str, ...]  # prompt and completion, decoded token by token
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        prompt = " ".join(self.tokens[:len(self.prompt_ids)])
        completion = " ".join(self.tokens[len(self.prompt_ids):])
        lines = [f"prompt (read, no loss):      {prompt!r}", f"completion (loss):           {completion!r}",
                 f"generation stops at ids:     {list(self.stop_ids)}"]
        lines += [f"PROBLEM: {p}" for p in self.problems] or ["OK: training and inference agree"]
        return "\n".join(lines)


def check_template(tokenizer: Any, messages: Messages | None = None, answer: str = "Yes", *,
                   model: Any = None, trained_ids: Sequence[int] | None = None) -> TemplateCheck:
    """Render one conversation for training and for inference and list what would make them differ.

    - The generation prompt must be a prefix of the conversation with the answer (else the answer
      cannot be told apart from the prompt).
    - The completion must contain an id that stops generation (`model.generation_config`, else the
      tokenizer's end token): otherwise the model learns to close its turn with a token that does
      not stop it, or learns no end at all, and keeps writing at inference.
    - `trained_ids`, the ids some pipeline trained on for this conversation (another template, another
      tokenizer call, a LlamaFactory dump), must equal the prompt's ids followed by the completion's:
      the first difference is reported with the tokens around it.
    """
    require_template(tokenizer)
    messages = messages or PROBE
    stops = stop_ids(model, tokenizer)
    problems: list[str] = []
    try:
        prompt, completion = split_turn(tokenizer, messages, answer)
    except ValueError as err:
        prompt, completion = prompt_text(tokenizer, messages), ""
        problems.append(str(err))
    prompt_ids, completion_ids = (tuple(ids) for ids in token_ids(tokenizer, [prompt, completion]))
    tokens = tuple(tokenizer.convert_ids_to_tokens(list(prompt_ids + completion_ids)))
    if completion and not set(completion_ids) & set(stops):
        problems.append(_missing_stop(tokenizer, answer, completion_ids, stops))
    if trained_ids is not None:
        difference = _first_difference(tokenizer, list(trained_ids), list(prompt_ids + completion_ids))
        if difference:
            problems.append(difference)
    return TemplateCheck(prompt_ids, completion_ids, stops, tokens, problems)


def _missing_stop(tokenizer: Any, answer: str, completion_ids: tuple[int, ...],
                  stops: tuple[int, ...]) -> str:
    answer_ids = set(token_ids(tokenizer, [answer])[0])
    closing = [i for i in completion_ids if i not in answer_ids and i in set(tokenizer.all_special_ids)]
    names = tokenizer.convert_ids_to_tokens(list(stops))
    if not closing:
        return (f"the template closes the assistant's turn with no special token, so the model never learns "
                f"to stop (generation stops at {names}): use a template that ends the turn with an "
                "end-of-turn token")
    end = tokenizer.convert_ids_to_tokens(closing[0])
    return (f"training teaches the model to close its turn with {end!r} (id {closing[0]}), but generation "
            f"stops at {names} (ids {list(stops)}): the model will not stop after its answer; set "
            f"model.generation_config.eos_token_id = {closing[0]}")


def _first_difference(tokenizer: Any, trained: list[int], expected: list[int]) -> str | None:
    if trained == expected:
        return None
    shorter = min(len(trained), len(expected))
    at = next((i for i in range(shorter) if trained[i] != expected[i]), shorter)

    def around(ids: list[int]) -> str:
        return " ".join(tokenizer.convert_ids_to_tokens(ids[max(at - 3, 0):at + 3]))

    return (f"the trained ids differ from what inference reads at token {at} of {len(expected)} "
            f"(trained: ...{around(trained)}...; inference: ...{around(expected)}...): train with the "
            "template the model is used with (labkit renders both with tokenizer.apply_chat_template)")
