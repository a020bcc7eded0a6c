"""SFT data: examples -> chat-templated token ids with a loss mask -> padded or packed batches.

An example is a (prompt, answer) pair or a labkit.worker.Sample (a conversation: system, earlier
turns, the prompt, the response). It is rendered by labkit.chat, as the annotators and the server
render it, so the LLM is trained on the very token ids it will read later. The loss falls on what
the assistant writes: every answer and its end-of-turn token (LlamaFactory's default), only the last
answer (`mask_history`), or every token (`train_on_prompt`).

Batches either group examples of similar length (less padding) in a random order that depends only
on (seed, epoch), so that a resumed run sees the same batches as an uninterrupted one, or pack
several examples into one row (`pack_rows`, `collate_packed`): position ids restart at 0 where an
example starts, and transformers then masks attention block-diagonally, so no example sees another
(LlamaFactory's `neat_packing`; its plain `packing` lets them see each other).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from labkit.chat import IGNORE, Messages, prompt_messages, require_template, split_turn, token_ids
from labkit.worker.formats import Sample

MEGABATCH = 50  # batches per length-sorted group: wide enough to cut padding, narrow enough to stay random


@dataclass(frozen=True)
class Encoded:
    """One example: its token ids, which of them the model is trained to write (`trained`: the loss
    mask), and how many times their loss counts (`weight`, 1: an ordinary example)."""

    ids: tuple[int, ...]
    trained: tuple[bool, ...]
    weight: float = 1.0

    @property
    def prompt_len(self) -> int:
        """Tokens before the first trained one: the prompt of a one-turn example."""
        return next((i for i, t in enumerate(self.trained) if t), len(self.ids))


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
            digest.update(repr((e.trained, e.weight, e.ids)).encode())
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


@dataclass(frozen=True)
class Conversation:
    """What one example teaches: (user, assistant) turns after an optional system message."""

    system: str | None
    turns: tuple[tuple[str, str], ...]
    weight: float = 1.0

    def messages(self, upto: int | None = None) -> Messages:
        """The messages the model reads before the answer of turn `upto` (default: the last one)."""
        upto = len(self.turns) - 1 if upto is None else upto
        return prompt_messages(self.system, self.turns[:upto], self.turns[upto][0])


def as_conversation(example: Any, index: int, system: str | None = None) -> Conversation:
    """A labkit.worker.Sample with a response (its own system message, else `system`), or a
    (prompt, answer) pair or mapping (see as_pair, weight_of) after `system`."""
    if isinstance(example, Sample):
        if example.kind != "sft":
            raise ValueError(f"example {index} ({example.source or 'a Sample'}) is {example.kind} data; "
                             "SFT needs a response to learn (preference data trains a reward model or DPO)")
        turns = (*example.history, (example.prompt, str(example.response)))
        return Conversation(example.system if example.system is not None else system, turns)
    prompt, answer = as_pair(example, index)
    return Conversation(system, ((prompt, answer),), weight_of(example, index))


Pieces = list[tuple[str, bool]]  # rendered text, and whether the model is trained to write it


def render(tokenizer: Any, conversation: Conversation, mask_history: bool = False) -> Pieces:
    """The conversation as chat-templated text pieces: each prompt (read) and each answer with its
    end of turn (written). With mask_history only the last answer is written and everything before
    it is one piece: the very prompt the model reads at inference."""
    last = len(conversation.turns) - 1
    pieces: Pieces = []
    rendered = ""
    for k in ([last] if mask_history else range(last + 1)):
        prompt, completion = split_turn(tokenizer, conversation.messages(k), conversation.turns[k][1])
        if not prompt.startswith(rendered):
            raise ValueError("the chat template renders earlier turns differently once a later turn follows "
                             "(some templates drop the reasoning of past answers), so the history cannot be "
                             "trained as written; train with mask_history=True")
        pieces += [(prompt[len(rendered):], False), (completion, True)]
        rendered = prompt + completion
    return pieces


def encode(tokenizer: Any, examples: Sequence[Any], cutoff: int, system: str | None = None, *,
           train_on_prompt: bool = False, mask_history: bool = False) -> EncodedSet:
    """Chat-template and tokenize examples; the loss goes on what the assistant writes.

    Each piece (a prompt, an answer with its end-of-turn tokens) is tokenized apart, as it is met
    at inference: the model reads the prompt's ids, then generates the answer's. Examples longer
    than `cutoff` are cut (counted in `truncated`), never dropped: a conversation first loses its
    oldest turns, then its last prompt loses its *first* tokens, unlike LlamaFactory, which cuts the
    end: the end holds the question and the assistant header that the answer follows (a long
    abstract cut at its end would teach the answer without the question).
    """
    require_template(tokenizer)
    if cutoff < 2:
        raise ValueError(f"cutoff={cutoff}: it must leave room for at least one prompt and one answer token.")
    if len(examples) == 0:
        raise ValueError("no SFT examples: pass at least one (prompt, answer) pair or Sample.")
    conversations = [as_conversation(e, i, system) for i, e in enumerate(examples)]
    pieces = [_rendered(tokenizer, c, i, mask_history) for i, c in enumerate(conversations)]
    flat = iter(token_ids(tokenizer, [text for p in pieces for text, _ in p]))
    encoded, truncated = [], 0
    for i, (conversation, parts) in enumerate(zip(conversations, pieces, strict=True)):
        ids = [next(flat) for _ in parts]
        if sum(map(len, ids)) > cutoff:
            truncated += 1
            parts, ids = _shorten(tokenizer, conversation, i, mask_history, cutoff, parts=parts, ids=ids)
        flags = [trained or train_on_prompt for _, trained in parts]
        encoded.append(Encoded(tuple(t for piece in ids for t in piece),
                               tuple(f for piece, f in zip(ids, flags, strict=True) for _ in piece),
                               conversation.weight))
    return EncodedSet(encoded, truncated)


def _rendered(tokenizer: Any, conversation: Conversation, index: int, mask_history: bool) -> Pieces:
    try:
        return render(tokenizer, conversation, mask_history)
    except ValueError as err:
        raise ValueError(f"example {index}: {err}") from None


def _shorten(tokenizer: Any, conversation: Conversation, index: int, mask_history: bool, cutoff: int, *,
             parts: Pieces, ids: list[list[int]]) -> tuple[Pieces, list[list[int]]]:
    """Drop the oldest turns while the example is too long, then cut the last prompt and answer."""
    turns = conversation.turns
    while len(turns) > 1 and sum(map(len, ids)) > cutoff:
        turns = turns[1:]
        shorter = Conversation(conversation.system, turns, conversation.weight)
        parts = _rendered(tokenizer, shorter, index, mask_history)
        ids = token_ids(tokenizer, [text for text, _ in parts])
    if sum(map(len, ids)) <= cutoff:
        return parts, ids
    assert len(parts) == 2, "one turn is left: its prompt and its answer"
    p_keep, a_keep = split_lengths(len(ids[0]), len(ids[1]), cutoff)
    return parts, [ids[0][len(ids[0]) - p_keep:], ids[1][:a_keep]]


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
    """Right-pad a batch to its longest example. labels: the ids the model is trained to write,
    IGNORE elsewhere; weights: each token's loss weight (its example's weight where it is trained)."""
    return _batch([[e] for e in examples], pad_id, device, packed=False)


def collate_packed(rows: Sequence[Sequence[Encoded]], pad_id: int, device: torch.device
                   ) -> dict[str, torch.Tensor]:
    """Rows of packed examples, right-padded to the longest row; position_ids restart at 0 where an
    example starts (the padding continues as one more sequence with no loss). The batch has no
    attention_mask: given none, transformers reads the restarts as boundaries and masks attention
    block-diagonally (masking_utils.find_packed_sequence_indices), so no example sees another."""
    return _batch(rows, pad_id, device, packed=True)


def _batch(rows: Sequence[Sequence[Encoded]], pad_id: int, device: torch.device, packed: bool
           ) -> dict[str, torch.Tensor]:
    width = max(sum(len(e.ids) for e in row) for row in rows)
    shape = (len(rows), width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    weights = torch.zeros(shape, dtype=torch.float32)
    positions = torch.zeros(shape, dtype=torch.long)
    real = torch.zeros(shape, dtype=torch.long)  # 1 on tokens, 0 on padding
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.ids)
            example_ids = torch.tensor(e.ids)
            trained = torch.tensor(e.trained)
            ids[r, at:at + n] = example_ids
            labels[r, at:at + n] = torch.where(trained, example_ids, IGNORE)
            weights[r, at:at + n] = trained * e.weight
            positions[r, at:at + n] = torch.arange(n)
            real[r, at:at + n] = 1
            at += n
        positions[r, at:] = torch.arange(width - at)
    batch = {"input_ids": ids, "labels": labels, "weights": weights, "tokens": real}
    batch.update({"position_ids": positions} if packed else {"attention_mask": real})
    return {key: value.to(device) for key, value in batch.items()}


def pack_rows(lengths: Sequence[int], capacity: int, order: Sequence[int] | None = None) -> list[list[int]]:
    """Best-fit decreasing: each example (longest first) goes into the row with the least room that
    still holds it, or starts a new row (LlamaFactory's greedy_knapsack, the pocket LLM's packing).
    Returns rows of indices into `lengths`; `order` limits and orders the candidates (ties keep it)."""
    candidates = list(range(len(lengths))) if order is None else list(order)
    too_long = [i for i in candidates if lengths[i] > capacity]
    if too_long:
        raise ValueError(f"examples {too_long[:5]} are longer than a row ({capacity} tokens); cut them first")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), kept sorted
    for i in sorted(candidates, key=lambda i: -lengths[i]):
        slot = bisect.bisect_left(free, (lengths[i], -1))
        if slot < len(free):
            room, row = free.pop(slot)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        if room - lengths[i] > 0:
            bisect.insort(free, (room - lengths[i], row))
    return rows
