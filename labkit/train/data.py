"""SFT data: (prompt, answer) pairs -> chat-templated token ids with an answer mask -> padded batches.

The prompt is rendered by labkit.chat, as the annotators and the server render it, so the LLM is
trained on the very token ids it will read later.
Batches group examples of similar length (less padding, so fewer wasted FLOPs) in a random order
that depends only on (seed, epoch): a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from labkit.chat import IGNORE, require_template, split_turn, token_ids

MEGABATCH = 50  # batches per length-sorted group: wide enough to cut padding, narrow enough to stay random


@dataclass(frozen=True)
class Encoded:
    """One example: its token ids; the first `prompt_len` of them are the prompt (no loss); its
    answer's loss counts `weight` times (1: an ordinary example)."""

    ids: tuple[int, ...]
    prompt_len: int
    weight: float = 1.0


@dataclass(frozen=True)
class EncodedSet:
    """Encoded examples and how many had to be cut to the cutoff length."""

    examples: list[Encoded]
    truncated: int

    @property
    def tokens(self) -> int:
        """All token ids, prompt and answer, padding excluded."""
        return sum(len(e.ids) for e in self.examples)

    def fingerprint(self) -> str:
        """A hash of every token id, mask and weight: tells a checkpoint whether it belongs to this data."""
        digest = hashlib.sha256()
        for e in self.examples:
            digest.update(repr((e.prompt_len, e.weight, e.ids)).encode())
        return digest.hexdigest()[:16]


def as_pair(example: Any, index: int) -> tuple[str, str]:
    """(prompt, answer) from a 2-tuple or a mapping with 'prompt' and 'answer'; a clear error otherwise."""
    if isinstance(example, Mapping) and "prompt" in example and "answer" in example:
        pair = (example["prompt"], example["answer"])
    elif isinstance(example, Sequence) and not isinstance(example, str) and len(example) == 2:
        pair = (example[0], example[1])
    else:
        raise ValueError(f"example {index}: expected a (prompt, answer) pair or a mapping with keys "
                         f"'prompt' and 'answer', got {type(example).__name__}: {str(example)[:80]!r}")
    if not all(isinstance(x, str) for x in pair):
        raise ValueError(f"example {index}: prompt and answer must be strings, got "
                         f"({type(pair[0]).__name__}, {type(pair[1]).__name__})")
    if not pair[0].strip():
        raise ValueError(f"example {index}: the prompt is empty")
    return pair


def weight_of(example: Any, index: int) -> float:
    """A mapping's optional 'weight' (default 1): how much its answer's loss counts.

    Two examples with one prompt and the answers "Yes" and "No", weighted p and 1 - p, teach the
    soft label p: their loss on the first answer token is the cross-entropy with (p, 1 - p).
    """
    if not isinstance(example, Mapping) or "weight" not in example:
        return 1.0
    weight = example["weight"]
    number = isinstance(weight, int | float) and not isinstance(weight, bool)
    if not number or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"example {index}: 'weight' must be a finite number >= 0, got {weight!r}")
    return float(weight)


def split_lengths(prompt_len: int, answer_len: int, cutoff: int) -> tuple[int, int]:
    """How many prompt and answer tokens to keep so that together they fit in `cutoff` (LlamaFactory's rule).

    A short answer is kept whole and the prompt is cut; a short prompt is kept whole and the answer
    is cut; when both are long, the budget is shared in proportion to their lengths. (`encode` cuts
    a prompt at its start and an answer at its end.)
    """
    if answer_len * 2 < cutoff:
        max_answer = cutoff
    elif prompt_len * 2 < cutoff:
        max_answer = cutoff - prompt_len
    else:
        max_answer = int(cutoff * answer_len / (prompt_len + answer_len))
    answer_keep = min(max_answer, answer_len)
    prompt_keep = min(max(cutoff - answer_keep, 0), prompt_len)
    return prompt_keep, answer_keep


def encode(tokenizer: Any, examples: Sequence[Any], cutoff: int, system: str | None = None) -> EncodedSet:
    """Chat-template and tokenize (prompt, answer) pairs; the loss goes on the answer and its end tokens.

    Prompt and answer are tokenized apart, as they are met at inference: the model reads the
    prompt's ids, then generates the answer's. Examples longer than `cutoff` are cut (counted in
    `truncated`), never dropped. A prompt loses its *first* tokens, unlike LlamaFactory, which cuts
    the end: the end holds the question and the assistant header that the answer follows (a long
    abstract cut at its end would teach the answer without the question).
    """
    require_template(tokenizer)
    if cutoff < 2:
        raise ValueError(f"cutoff={cutoff}: it must leave room for at least one prompt and one answer token.")
    if len(examples) == 0:
        raise ValueError("no SFT examples: pass at least one (prompt, answer) pair.")
    head = [{"role": "system", "content": system}] if system else []
    prompts, answers, weights = [], [], []
    for i, example in enumerate(examples):
        prompt, answer = as_pair(example, i)
        weights.append(weight_of(example, i))
        user = head + [{"role": "user", "content": prompt}]
        try:
            prompt_part, answer_part = split_turn(tokenizer, user, answer)
        except ValueError as err:
            raise ValueError(f"example {i}: {err}") from None
        prompts.append(prompt_part)
        answers.append(answer_part)
    prompt_ids, answer_ids = token_ids(tokenizer, prompts), token_ids(tokenizer, answers)
    encoded, truncated = [], 0
    for p, a, weight in zip(prompt_ids, answer_ids, weights, strict=True):
        p_keep, a_keep = split_lengths(len(p), len(a), cutoff)
        truncated += (p_keep, a_keep) != (len(p), len(a))
        encoded.append(Encoded(tuple(p[len(p) - p_keep:]) + tuple(a[:a_keep]), p_keep, weight))
    return EncodedSet(encoded, truncated)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                           group_by_length: bool = True) -> list[list[int]]:
    """One epoch of batches (lists of example indices), in an order set by (seed, epoch) alone.

    With group_by_length, a random permutation is cut into megabatches of MEGABATCH batches, each
    megabatch is sorted by length and cut into batches, and the batches are shuffled: neighbours in
    a batch have similar lengths, yet every epoch's batches differ.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    span = batch_size * MEGABATCH
    batches = []
    for start in range(0, len(order), span):
        group = sorted(order[start:start + span], key=lambda i: -lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def collate(examples: Sequence[Encoded], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example; labels are the ids on answer tokens, IGNORE elsewhere;
    `weights` holds each example's weight."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids)
        labels[row, e.prompt_len:n] = ids[row, e.prompt_len:n]
        mask[row, :n] = 1
    weights = torch.tensor([e.weight for e in examples], dtype=torch.float32)
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device),
            "weights": weights.to(device)}
