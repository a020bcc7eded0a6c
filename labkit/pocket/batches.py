"""From examples to training rows: tokenize with per-token loss weights, then pack.

Every token gets the weight of *predicting* it: the assistant's answer counts
`Example.answer_weight` (5 for a record's answer; its follow-up threshold checks CHECK_WEIGHT),
the rest of a chat `Example.prompt_weight` (0.5), a document 1. For a Yes/No question the
answer token has a soft target: the rule's probability of Yes, not the one sampled answer in the
text, so each record teaches the full uncertainty instead of a coin flip.

Packing puts several examples in one row of `seq_len` tokens (best fit, longest first, within
chunks of the shuffled corpus). Position ids restart at 0 for each example; the packed attention
(`labkit.pocket.model.packed_attention`) reads them as example boundaries, so an example never sees
another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from labkit.chat import IGNORE
from labkit.pocket.corpus import CHECK_WEIGHT, Example
from labkit.pocket.tokenizer import END_OF_TEXT, IM_END, header
from labkit.train.data import pack_rows

PACK_CHUNK = 4096


@dataclass(frozen=True)
class Encoded:
    """One example as token ids with a target, an optional soft alternative and a weight per
    position: position i reads ids[i] and predicts targets[i] (= ids[i + 1])."""

    ids: np.ndarray  # int64 [n]
    targets: np.ndarray  # int64 [n]
    alt: np.ndarray  # int64 [n]: a second target (IGNORE when none)
    alt_share: np.ndarray  # float32 [n]: the probability mass on `alt`
    weights: np.ndarray  # float32 [n]


def segments(example: Example) -> list[tuple[str, float, bool]]:
    """(text, weight, is_answer) pieces that concatenate to the rendered example."""
    if not example.messages:
        return [(example.text, 1.0, False), (END_OF_TEXT, 1.0, False)]
    out = []
    prompt = example.prompt_weight
    answered = False
    for m in example.messages:
        assistant = m["role"] == "assistant"
        # the first answer is the example's point; later ones are follow-up threshold checks
        answer = CHECK_WEIGHT if answered else example.answer_weight
        answered |= assistant
        out.append((header(m["role"]), prompt, False))
        out.append((m["content"], answer if assistant else prompt, assistant))
        out.append((IM_END, 1.0 if assistant else prompt, False))  # learn to stop after answering
        out.append(("\n", prompt, False))
    return out


def encode(examples: list[Example], tokenizer: Any) -> list[Encoded]:
    """Tokenize every example (all pieces in one batch call to the Rust tokenizer)."""
    pieces = [segments(e) for e in examples]
    flat = [text for p in pieces for text, _, _ in p]
    ids_of = tokenizer.backend_tokenizer.encode_batch(flat, add_special_tokens=False)
    yes, no = (tokenizer.convert_tokens_to_ids(w) for w in ("Yes", "No"))
    out, k = [], 0
    for example, parts in zip(examples, pieces, strict=True):
        ids: list[int] = []
        weights: list[float] = []
        answer_at = -1
        for _, weight, is_answer in parts:
            piece = ids_of[k].ids
            k += 1
            if is_answer and answer_at < 0:
                answer_at = len(ids)
            ids += piece
            weights += [weight] * len(piece)
        out.append(_shift(np.array(ids), np.array(weights, dtype=np.float32), example,
                          answer_at, yes, no))
    return out


def _shift(ids: np.ndarray, weights: np.ndarray, example: Example, answer_at: int,
           yes: int, no: int) -> Encoded:
    targets = np.append(ids[1:], IGNORE)
    shifted = np.append(weights[1:], 0.0).astype(np.float32)
    alt = np.full(len(ids), IGNORE)
    share = np.zeros(len(ids), dtype=np.float32)
    if example.p_yes is not None:
        at = answer_at - 1  # the position that predicts the answer's first token
        if targets[at] not in (yes, no):
            raise ValueError(f"a Yes/No example's answer is not one token: {example.messages[-1]}")
        alt[at] = no if targets[at] == yes else yes
        share[at] = 1.0 - example.p_yes if targets[at] == yes else example.p_yes
    return Encoded(ids, targets, alt, share, shifted)


@dataclass(frozen=True)
class Rows:
    """Packed training rows, all [rows, seq_len]."""

    input_ids: np.ndarray
    position_ids: np.ndarray
    targets: np.ndarray
    alt: np.ndarray
    alt_share: np.ndarray
    weights: np.ndarray
    dropped: int  # examples longer than seq_len, left out
    tokens: int  # example tokens in all rows (the rest is padding)

    def __len__(self) -> int:
        return len(self.input_ids)


def pack(encoded: list[Encoded], seq_len: int, pad_id: int, rng: np.random.Generator) -> Rows:
    """Best-fit-decreasing packing of shuffled examples into rows; rows come out shuffled."""
    shuffled = rng.permutation(len(encoded))
    too_long = [i for i in shuffled if len(encoded[i].ids) > seq_len]
    order = [i for i in shuffled if len(encoded[i].ids) <= seq_len]
    lengths = [len(e.ids) for e in encoded]
    rows: list[list[int]] = []
    for start in range(0, len(order), PACK_CHUNK):
        rows += pack_rows(lengths, seq_len, order[start : start + PACK_CHUNK])
    rows = [rows[i] for i in rng.permutation(len(rows))]
    return _fill(rows, encoded, seq_len, pad_id, len(too_long))


def _fill(rows: list[list[int]], encoded: list[Encoded], seq_len: int, pad_id: int,
          dropped: int) -> Rows:
    shape = (len(rows), seq_len)
    out: dict[str, np.ndarray] = {
        "input_ids": np.full(shape, pad_id, dtype=np.int64),
        "position_ids": np.zeros(shape, dtype=np.int64),
        "targets": np.full(shape, IGNORE, dtype=np.int64),
        "alt": np.full(shape, IGNORE, dtype=np.int64),
        "alt_share": np.zeros(shape, dtype=np.float32),
        "weights": np.zeros(shape, dtype=np.float32),
    }
    filled = 0
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            e, n = encoded[i], len(encoded[i].ids)
            out["input_ids"][r, at : at + n] = e.ids
            out["position_ids"][r, at : at + n] = np.arange(n)
            out["targets"][r, at : at + n] = e.targets
            out["alt"][r, at : at + n] = e.alt
            out["alt_share"][r, at : at + n] = e.alt_share
            out["weights"][r, at : at + n] = e.weights
            at += n
        # the padding is one more "sequence" of its own, with no loss
        out["position_ids"][r, at:] = np.arange(seq_len - at)
        filled += at
    return Rows(**out, dropped=dropped, tokens=filled)  # type: ignore[arg-type]
