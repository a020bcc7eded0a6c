"""Exercises of lesson 08 (data and chat templates): a chat template by hand, the loss mask of a
conversation, best-fit packing, the attention mask that keeps packed examples apart."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from labkit.grading.exercise import Case, Exercise, case, close

IGNORE = -100
ROLES = ("user", "assistant")
# The worker imports what the notebook imports (torch, transformers, peft, the kit's trainers) before
# the first hidden case: on a busy 2-core machine that alone can pass the default 30 s (lesson 06 too).
TIME_LIMIT_S = 90.0


@cache
def _pocket_tokenizer() -> Any:
    from labkit.loader import load_tokenizer  # transformers: loaded when graded, not with the bank

    return load_tokenizer(None)


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Reference: the pocket LLM's own chat template (ChatML), rendered by transformers."""
    return str(_pocket_tokenizer().apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                       tokenize=False))


def loss_labels(ids: list[int], answers: list[list[int]], mask_history: bool = False,
                train_on_prompt: bool = False) -> list[int]:
    """Reference: the labels of one example: the token id where the model is trained to write it,
    IGNORE elsewhere. `answers` holds [start, end) spans of the assistant's answers, in order."""
    if train_on_prompt:
        return list(ids)
    labels = [IGNORE] * len(ids)
    for start, end in answers[-1:] if mask_history else answers:
        labels[start:end] = ids[start:end]
    return labels


def best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Reference: labkit's packer (labkit.train.data.pack_rows)."""
    from labkit.train.data import pack_rows

    return pack_rows(lengths, capacity)


def packed_attention_mask(position_ids: list[int]) -> list[list[bool]]:
    """Reference: transformers' own mask for a packed row (masking_utils: the sequence index from
    the position ids, then causal and same-sequence)."""
    import torch
    from transformers.masking_utils import find_packed_sequence_indices

    positions = torch.tensor([position_ids])
    sequence = find_packed_sequence_indices(positions)
    sequence = torch.zeros_like(positions) if sequence is None else sequence
    n = len(position_ids)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    same = sequence[0][:, None] == sequence[0][None, :]
    return (causal & same).tolist()


# --- hidden cases ---------------------------------------------------------------------------------

WORDS = "the patient is sick old young glucose high low yes no be brief why ? 0.7".split()


def _text(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(1, 6))))


def _hidden_chatml(rng: np.random.Generator) -> list[Case]:
    cases = []
    for turns in (1, 1, 2, 3):
        for system in (False, True):
            messages = [{"role": "system", "content": _text(rng)}] if system else []
            for k in range(2 * turns - 1):
                messages.append({"role": ROLES[k % 2], "content": _text(rng)})
            cases.append(case(messages, add_generation_prompt=True))
            answered = [*messages, {"role": "assistant", "content": _text(rng)}]
            cases.append(case(answered, add_generation_prompt=False))
    return cases


def _conversation(rng: np.random.Generator) -> tuple[list[int], list[list[int]]]:
    ids: list[int] = []
    spans = []
    for _ in range(int(rng.integers(1, 4))):
        ids += rng.integers(1, 500, size=int(rng.integers(2, 9))).tolist()  # a prompt
        start = len(ids)
        ids += rng.integers(1, 500, size=int(rng.integers(1, 6))).tolist()  # an answer and its end of turn
        spans.append([start, len(ids)])
    if rng.random() < 0.5:
        ids += rng.integers(1, 500, size=int(rng.integers(1, 4))).tolist()  # a closing newline, say
    return ids, spans


def _hidden_labels(rng: np.random.Generator) -> list[Case]:
    cases = []
    for _ in range(8):
        ids, spans = _conversation(rng)
        cases += [case(ids, spans), case(ids, spans, mask_history=True)]
    ids, spans = _conversation(rng)
    cases.append(case(ids, spans, train_on_prompt=True))
    return cases


def _hidden_pack(rng: np.random.Generator) -> list[Case]:
    cases = [case([6, 3, 8, 1], 10),  # best fit puts the 1 with the 6 and the 3, first fit with the 8
             case([3, 3, 3], 3), case([1], 8)]
    for _ in range(6):
        capacity = int(rng.integers(8, 40))
        cases.append(case(rng.integers(1, capacity + 1, size=int(rng.integers(5, 30))).tolist(), capacity))
    return cases


def _hidden_attention(rng: np.random.Generator) -> list[Case]:
    cases = [case([0, 1, 2, 3]), case([0, 0, 0]), case([0, 1, 0, 1, 2, 0])]
    for _ in range(5):
        positions: list[int] = []
        for _ in range(int(rng.integers(2, 5))):
            positions += list(range(int(rng.integers(1, 6))))
        cases.append(case(positions))
    return cases


EXERCISES = [
    Exercise(
        id="08.template", function="chatml", tier="warm-up", points=1,
        task="chatml(messages, add_generation_prompt=False) -> str: the conversation in ChatML, as the "
             "pocket LLM's chat template renders it: each message as '<|im_start|>' + role + '\\n' + "
             "content + '<|im_end|>' + '\\n'; with add_generation_prompt, '<|im_start|>assistant\\n' "
             "at the end.",
        reference=chatml,
        examples=(case([{"role": "user", "content": "is it ?"}], add_generation_prompt=True),
                  case([{"role": "system", "content": "be brief"}, {"role": "user", "content": "is it ?"},
                        {"role": "assistant", "content": "yes"}])),
        hidden=_hidden_chatml,
        compare=close(), time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="08.mask", function="loss_labels", tier="core", points=2,
        task="loss_labels(ids, answers, mask_history=False, train_on_prompt=False) -> list[int]: the "
             "labels of one example, the id where the model is trained to write it and -100 elsewhere; "
             "answers: the [start, end) spans of the assistant's answers; mask_history: only the last "
             "answer; train_on_prompt: every token. Not shifted: the model shifts labels itself.",
        reference=loss_labels,
        examples=(case([5, 6, 7, 8, 9], [[3, 5]]),
                  case([1, 2, 3, 4, 5, 6, 7], [[2, 3], [5, 7]], mask_history=True)),
        hidden=_hidden_labels,
        compare=close(), time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="08.pack", function="best_fit", tier="core", points=2,
        task="best_fit(lengths, capacity) -> rows of example indices: take the examples longest first "
             "(equal lengths: lower index first); put each in the row with the least room left that "
             "still holds it (equal room: the row opened first), or open a new row; rows in the order "
             "they were opened, indices in the order they were placed.",
        reference=best_fit,
        examples=(case([5, 3, 4, 2, 6], 8), case([2, 2, 2], 4)),
        hidden=_hidden_pack,
        compare=close(), time_limit_s=TIME_LIMIT_S,
    ),
    Exercise(
        id="08.attention", function="packed_attention_mask", tier="stretch", points=3,
        task="packed_attention_mask(position_ids) -> T x T nested list of bools: for one packed row whose "
             "position ids restart at 0 where an example starts, mask[q][k] is True when token q may "
             "attend to token k: k belongs to the same example as q and is not after it.",
        reference=packed_attention_mask,
        examples=(case([0, 1, 0, 1, 2]),),
        hidden=_hidden_attention,
        compare=close(), time_limit_s=TIME_LIMIT_S,
    ),
]
