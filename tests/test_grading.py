"""Exercises, check(), and the grader: hidden tests out of the kernel, reports, and cheats that fail."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from notebook_runner import ROOT

from labkit.commands.grade import main
from labkit.grading import Exercise, bank, case, check, close
from labkit.grading.check import run_check
from labkit.grading.extract import definitions, lesson_of
from labkit.grading.grader import grade_submission
from labkit.grading.worker import to_plain

CHEATS = sorted((ROOT / "tests" / "cheats").glob("*.ipynb"))
# cheats whose in-kernel check() is fooled into saying "passed": the grade must still be 0
FOOLS_CHECK = {"00_redefine_check", "00_patch_labkit", "00_hardcode_examples",
               "00_call_reference", "00_print_passed"}
SOLUTION = "    return {str(c): float(frame[c].isna().mean()) for c in frame.columns}\n"


def notebook(*sources: str) -> dict[str, Any]:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}", "metadata": {},
              "outputs": [], "source": text} for i, text in enumerate(sources)]
    cells[0]["metadata"]["tags"] = ["parameters"]
    return {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                        "language": "python"}}}


def write(path: Path, *sources: str) -> Path:
    path.write_text(json.dumps(notebook('FAST = False\nSEED = 0\nMODEL = "pocket"', *sources)))
    return path


def outputs_text(executed: Path) -> str:
    nb = json.loads(executed.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


# --- the bank and check() ---------------------------------------------------------------------

@pytest.mark.parametrize("exercise", bank.all_exercises(), ids=lambda e: e.id)
def test_every_reference_passes_its_examples_and_draws_fresh_hidden_cases(exercise: Exercise) -> None:
    assert run_check(exercise.id, {exercise.function: exercise.reference}).status == "passed"

    def drawn(seed: int) -> list[Any]:
        cases = exercise.hidden(np.random.default_rng(seed))
        return [to_plain(c.call(exercise.reference)) for c in cases]

    assert drawn(1) == drawn(1)  # same seed, same cases
    assert drawn(1) != drawn(2)  # inputs are drawn, not fixed
    visible = [to_plain(c.call(exercise.reference)) for c in exercise.examples]
    assert not any(v in drawn(1) for v in visible)


def _ledger_without_master_copy(n_params, n_trainable, precision="fp32", quantization_bit=None):
    weight, gradient, adam = {"fp32": (4, 4, 8), "amp": (2, 4, 8), "pure_bf16": (2, 2, 4)}[precision]
    frozen = quantization_bit / 8 if quantization_bit else weight
    weights = (n_params - n_trainable) * frozen + n_trainable * weight
    total = weights + n_trainable * (gradient + adam)
    return {"weights": weights, "gradients": n_trainable * gradient, "optimizer": n_trainable * adam,
            "total": total}


def _ledger_quantizing_trained_weights(n_params, n_trainable, precision="fp32", quantization_bit=None):
    right = bank.get("07.ledger").reference(n_params, n_trainable, precision, quantization_bit)
    if quantization_bit:  # every weight at quantization_bit / 8, the adapter's too
        right["total"] += n_params * quantization_bit / 8 - right["weights"]
        right["weights"] = n_params * quantization_bit / 8
    return right


def _lora_scaled_by_rank_always(x, weight, bias, A, B, alpha, use_rslora=False):
    out = x @ weight.T + (alpha / A.shape[0]) * ((x @ A.T) @ B.T)
    return out if bias is None else out + bias


def _lora_without_bias(x, weight, bias, A, B, alpha, use_rslora=False):
    r = A.shape[0]
    return x @ weight.T + (alpha / (r ** 0.5 if use_rslora else r)) * ((x @ A.T) @ B.T)


def _budget_strictly_under(budget_bytes, n_params, n_lora, precision="amp", activation_bytes=0):
    reference = bank.get("07.budget").reference
    answer = reference(budget_bytes - 1e-6 * budget_bytes, n_params, n_lora, precision, activation_bytes)
    return answer if answer["method"] else reference(budget_bytes, n_params, n_lora, precision, activation_bytes)


def _budget_without_activations(budget_bytes, n_params, n_lora, precision="amp", activation_bytes=0):
    return bank.get("07.budget").reference(budget_bytes, n_params, n_lora, precision, 0)


def _chatml_without_newlines(messages, add_generation_prompt=False):
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" for m in messages)
    return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def _chatml_without_generation_prompt(messages, add_generation_prompt=False):
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def _labels_shifted(ids, answers, mask_history=False, train_on_prompt=False):
    labels = [-100] * len(ids)
    for start, end in answers[-1:] if mask_history else answers:
        labels[start - 1:end - 1] = ids[start:end]  # pre-shifted, as if the model did not shift
    return list(ids) if train_on_prompt else labels


def _labels_every_answer_always(ids, answers, mask_history=False, train_on_prompt=False):
    labels = [-100] * len(ids)
    for start, end in answers:
        labels[start:end] = ids[start:end]
    return list(ids) if train_on_prompt else labels


def _pack_first_fit(lengths, capacity):
    rows, room = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fit = next((r for r in range(len(rows)) if room[r] >= lengths[i]), None)
        if fit is None:
            rows.append([]), room.append(capacity)
            fit = len(rows) - 1
        rows[fit].append(i)
        room[fit] -= lengths[i]
    return rows


def _pack_in_file_order(lengths, capacity):
    rows, room = [], []
    for i, length in enumerate(lengths):  # best fit, but not longest first
        fits = [r for r in range(len(rows)) if room[r] >= length]
        fit = min(fits, key=lambda r: (room[r], r)) if fits else None
        if fit is None:
            rows.append([]), room.append(capacity)
            fit = len(rows) - 1
        rows[fit].append(i)
        room[fit] -= length
    return rows


def _attention_causal_over_the_row(position_ids):
    n = len(position_ids)
    return [[k <= q for k in range(n)] for q in range(n)]  # plain packing: every example sees the ones before


def _attention_both_ways_in_an_example(position_ids):
    starts = [i for i, p in enumerate(position_ids) if p == 0]
    example = [max(s for s in starts if s <= i) for i in range(len(position_ids))]
    return [[example[k] == example[q] for k in range(len(example))] for q in range(len(example))]


def _bt_without_the_minus(chosen_scores, rejected_scores):
    margins = np.array(chosen_scores) - np.array(rejected_scores)
    return float(np.mean(np.log(1 / (1 + np.exp(-margins)))))  # maximizes the wrong thing


def _bt_summed(chosen_scores, rejected_scores):
    margins = np.array(chosen_scores) - np.array(rejected_scores)
    return float(np.sum(np.log1p(np.exp(-margins))))


def _dpo_without_reference(chosen, rejected, ref_chosen, ref_rejected, beta):
    margins = beta * (np.array(chosen) - np.array(rejected))
    return float(np.mean(np.log1p(np.exp(-margins))))


def _dpo_beta_outside(chosen, rejected, ref_chosen, ref_rejected, beta):
    margins = (np.array(chosen) - np.array(ref_chosen)) - (np.array(rejected) - np.array(ref_rejected))
    return float(beta * np.mean(np.log1p(np.exp(-margins))))


def _groups_population_std(rewards, group_size):
    grouped = np.array(rewards).reshape(-1, group_size)
    return ((grouped - grouped.mean(1, keepdims=True)) / (grouped.std(1, keepdims=True) + 1e-4)).ravel().tolist()


def _groups_over_the_batch(rewards, group_size):
    r = np.array(rewards)
    return ((r - r.mean()) / (r.std(ddof=1) + 1e-4)).tolist()


def _kl_score_on_the_last_column(logps, ref_logps, scores, mask, kl_coef):
    rewards = -kl_coef * (np.array(logps) - np.array(ref_logps)) * np.array(mask)
    rewards[:, -1] += scores  # the row's end, not the answer's
    return rewards.tolist()


def _kl_on_the_padding_too(logps, ref_logps, scores, mask, kl_coef):
    rewards = -kl_coef * (np.array(logps) - np.array(ref_logps))
    rewards[np.arange(len(rewards)), np.array(mask).sum(1) - 1] += scores
    return rewards.tolist()


def _pick_per_token(token_logprobs, options):
    sums = [sum(t) for t in token_logprobs]
    means = [sum(t) / len(t) for t in token_logprobs]  # normalized by tokens, not characters
    return [int(np.argmax(sums)), int(np.argmax(means))]


def _pick_per_word(token_logprobs, options):
    sums = [sum(t) for t in token_logprobs]
    per_word = [s / max(len(o.split()), 1) for s, o in zip(sums, options, strict=True)]
    return [int(np.argmax(sums)), int(np.argmax(per_word))]


def _pick_ties_last(token_logprobs, options):
    sums = [sum(t) for t in token_logprobs]
    per_char = [s / max(len(o), 1) for s, o in zip(sums, options, strict=True)]
    return [max(range(len(v)), key=lambda i, v=v: (v[i], i)) for v in (sums, per_char)]  # ties: the last


def _lcs(a, b):
    row = [0] * (len(b) + 1)
    for x in a:
        previous, row = row, [0]
        for j, y in enumerate(b):
            row.append(previous[j] + 1 if x == y else max(previous[j + 1], row[j]))
    return row[-1]


def _rouge_words(text):
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _f(overlap, n_candidate, n_reference):
    return 2 * overlap / (n_candidate + n_reference) if overlap else 0.0


def _rouge_recall(candidate, reference):
    a, b = _rouge_words(candidate), _rouge_words(reference)
    return _lcs(a, b) / len(b) if a and b else 0.0


def _rouge_precision(candidate, reference):
    a, b = _rouge_words(candidate), _rouge_words(reference)
    return _lcs(a, b) / len(a) if a and b else 0.0


def _rouge_whitespace_split(candidate, reference):
    a, b = candidate.split(), reference.split()  # neither lower case nor punctuation removed
    return _f(_lcs(a, b), len(a), len(b)) if a and b else 0.0


def _rouge_lower_whitespace_split(candidate, reference):
    a, b = candidate.lower().split(), reference.lower().split()  # "high." is not "high"
    return _f(_lcs(a, b), len(a), len(b)) if a and b else 0.0


def _rouge_unigram_overlap(candidate, reference):
    a, b = _rouge_words(candidate), _rouge_words(reference)  # ROUGE-1: word order ignored
    overlap = sum(min(a.count(w), b.count(w)) for w in set(a))
    return _f(overlap, len(a), len(b)) if a and b else 0.0


def _rouge_set_overlap(candidate, reference):
    a, b = _rouge_words(candidate), _rouge_words(reference)
    return _f(len(set(a) & set(b)), len(a), len(b)) if a and b else 0.0


def _rouge_longest_common_substring(candidate, reference):
    a, b = _rouge_words(candidate), _rouge_words(reference)
    longest, run = 0, [0] * (len(b) + 1)  # run[j + 1]: the common run of words ending at b[j]
    for x in a:
        run = [0] + [run[j] + 1 if x == y else 0 for j, y in enumerate(b)]
        longest = max(longest, *run)
    return _f(longest, len(a), len(b)) if a and b else 0.0


def _rouge_stemmed(candidate, reference):
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=True).score(reference, candidate)["rougeL"].fmeasure


def _bleu_counts(candidates, references, max_n, clip=True, split=str.split):
    """Matches and candidate n-grams of each order over the corpus, and the lengths c and r."""
    matches, totals, c, r = [0] * max_n, [0] * max_n, 0, 0
    for candidate, reference in zip(candidates, references, strict=True):
        a, b = split(candidate), split(reference)
        c, r = c + len(a), r + len(b)
        for n in range(1, max_n + 1):
            mine = Counter(tuple(a[i:i + n]) for i in range(len(a) - n + 1))
            theirs = Counter(tuple(b[i:i + n]) for i in range(len(b) - n + 1))
            totals[n - 1] += sum(mine.values())
            matches[n - 1] += sum(min(k, theirs[g]) if clip else k * (g in theirs) for g, k in mine.items())
    return matches, totals, c, r


def _bleu_from(matches, totals, c, r, mean="geometric", penalty="short"):
    """BLEU from the counts, 0 where it is undefined (a student's guards: no crash on any case)."""
    if not c or not all(totals):
        return 0.0
    precisions = [m / t for m, t in zip(matches, totals, strict=True)]
    if mean == "geometric":
        score = math.exp(sum(math.log(p) for p in precisions) / len(precisions)) if all(precisions) else 0.0
    else:
        score = sum(precisions) / len(precisions)
    if penalty == "always" or (penalty == "short" and c < r):
        score *= math.exp(1 - r / c)
    return score


def _bleu_unclipped(candidates, references, max_n=4):
    return _bleu_from(*_bleu_counts(candidates, references, max_n, clip=False))


def _bleu_mean_of_sentences(candidates, references, max_n=4):
    pairs = zip(candidates, references, strict=True)
    return float(np.mean([_bleu_from(*_bleu_counts([c], [r], max_n)) for c, r in pairs]))


def _bleu_without_brevity_penalty(candidates, references, max_n=4):
    return _bleu_from(*_bleu_counts(candidates, references, max_n), penalty="never")


def _bleu_arithmetic_mean(candidates, references, max_n=4):
    return _bleu_from(*_bleu_counts(candidates, references, max_n), mean="arithmetic")


def _bleu_penalty_when_longer_too(candidates, references, max_n=4):
    return _bleu_from(*_bleu_counts(candidates, references, max_n), penalty="always")


def _bleu_up_to_bigrams(candidates, references, max_n=4):
    return _bleu_from(*_bleu_counts(candidates, references, 2))  # max_n read as 2 whatever it is


def _bleu_always_four(candidates, references, max_n=4):
    return _bleu_from(*_bleu_counts(candidates, references, 4))  # max_n ignored


def _bleu_lower_case(candidates, references, max_n=4):
    return _bleu_from(*_bleu_counts(candidates, references, max_n, split=lambda s: s.lower().split()))


def _bleu_split_on_spaces(candidates, references, max_n=4):
    return _bleu_from(*_bleu_counts(candidates, references, max_n, split=lambda s: s.split(" ")))


def _bleu_clipped_by_the_whole_corpus(candidates, references, max_n=4):
    """n-grams pooled over all candidates and all references: a word matches another line's reference."""
    matches, totals = [], []
    for n in range(1, max_n + 1):
        mine, theirs = Counter(), Counter()
        for text, pool in [(c, mine) for c in candidates] + [(r, theirs) for r in references]:
            words = text.split()
            pool.update(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        totals.append(sum(mine.values()))
        matches.append(sum((mine & theirs).values()))
    c, r = sum(len(t.split()) for t in candidates), sum(len(t.split()) for t in references)
    return _bleu_from(matches, totals, c, r)


def _forward_with(q_of, clamp: bool = True):
    def loss(logits, noisy_targets, transition):
        p = 1 / (1 + np.exp(-np.asarray(logits, dtype=float)))
        y, t = np.asarray(noisy_targets, dtype=float), np.asarray(transition, dtype=float)
        q = q_of(p, t)
        q = np.clip(q, 1e-6, 1 - 1e-6) if clamp else q
        with np.errstate(divide="ignore", invalid="ignore"):
            return -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return loss


_forward_transposed = _forward_with(lambda p, t: (1 - p) * t[1, 0] + p * t[1, 1])  # T[1][0] for T[0][1]
_forward_uncorrected = _forward_with(lambda p, t: p)  # plain BCE: the flips are learned
_forward_unclamped = _forward_with(lambda p, t: (1 - p) * t[0, 1] + p * t[1, 1], clamp=False)
_forward_column_sums = _forward_with(lambda p, t: (1 - p) * t[1, 0] + p * t[0, 0])  # read by columns


def _forward_corrects_the_target(logits, noisy_targets, transition):
    """Backward instead of forward: the target is pushed through T and compared with p."""
    p = np.clip(1 / (1 + np.exp(-np.asarray(logits, dtype=float))), 1e-6, 1 - 1e-6)
    y, t = np.asarray(noisy_targets, dtype=float), np.asarray(transition, dtype=float)
    target = (1 - y) * t[0, 1] + y * t[1, 1]
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def _forward_mean(logits, noisy_targets, transition):
    return float(np.mean(_forward_with(lambda p, t: (1 - p) * t[0, 1] + p * t[1, 1])(
        logits, noisy_targets, transition)))


def _change_auc(labels, p, rows):
    y = np.asarray(labels)[rows]
    if y.min() == y.max():
        return None
    from labkit import metrics
    return metrics.auc(y, np.asarray(p, dtype=float)[rows])


def _change_full(labels, p_best, p_new):
    rows = np.arange(len(labels))
    return _change_auc(labels, p_new, rows) - _change_auc(labels, p_best, rows)


def _change_unpaired(labels, p_best, p_new, draws):
    """Each state on its own resamples: the shared luck of the sample no longer cancels."""
    pairs = zip(draws, draws[1:] + draws[:1])
    changes = [_change_auc(labels, p_new, a) - _change_auc(labels, p_best, b) for a, b in pairs
               if _change_auc(labels, p_new, a) is not None and _change_auc(labels, p_best, b) is not None]
    return [_change_full(labels, p_best, p_new), *np.percentile(changes, [2.5, 97.5]).tolist()]


def _change_one_class_as_no_change(labels, p_best, p_new, draws):
    """A resample with one class counted as a change of 0 instead of being left out."""
    changes = [0.0 if _change_auc(labels, p_new, d) is None
               else _change_auc(labels, p_new, d) - _change_auc(labels, p_best, d) for d in draws]
    return [_change_full(labels, p_best, p_new), *np.percentile(changes, [2.5, 97.5]).tolist()]


def _changes(labels, p_best, p_new, draws):
    return [_change_auc(labels, p_new, d) - _change_auc(labels, p_best, d) for d in draws
            if _change_auc(labels, p_new, d) is not None]


def _change_normal_interval(labels, p_best, p_new, draws):
    """mean +- 1.96 standard deviations of the resampled changes instead of their percentiles."""
    changes = np.array(_changes(labels, p_best, p_new, draws))
    return [_change_full(labels, p_best, p_new), changes.mean() - 1.96 * changes.std(),
            changes.mean() + 1.96 * changes.std()]


def _change_90_percent(labels, p_best, p_new, draws):
    return [_change_full(labels, p_best, p_new),
            *np.percentile(_changes(labels, p_best, p_new, draws), [5, 95]).tolist()]


def _change_reversed(labels, p_best, p_new, draws):
    """best - new: the interval of the wrong sign."""
    low, high = np.percentile(_changes(labels, p_best, p_new, draws), [2.5, 97.5])
    return [-_change_full(labels, p_best, p_new), -high, -low]


def _summary_best_by_test_auc(records, llm_final_auc, supervised_auc):
    """The best iteration by (test) AUC: selection on the test split."""
    best = max(r["vertical_auc"] for r in records)
    return {"llm_gain": llm_final_auc - records[0]["llm_auc"], "vertical_auc": best,
            "pct_of_supervised": 100 * best / supervised_auc}


def _summary_without_the_last_back_tuning(records, llm_final_auc, supervised_auc):
    last = records[-1]["vertical_auc"]
    return {"llm_gain": records[-1]["llm_auc"] - records[0]["llm_auc"], "vertical_auc": last,
            "pct_of_supervised": 100 * last / supervised_auc}


def _summary_as_a_fraction(records, llm_final_auc, supervised_auc):
    last = records[-1]["vertical_auc"]
    return {"llm_gain": llm_final_auc - records[0]["llm_auc"], "vertical_auc": last,
            "pct_of_supervised": last / supervised_auc}


def _token_with(*, naive: bool = False, first_only: bool = False, raw: bool = False,
                two_way: bool = False):  # type: ignore[no-untyped-def]
    def token_probability(logits, yes_ids, no_ids):  # type: ignore[no-untyped-def]
        z = np.asarray(logits, dtype=float)
        yes, no = (yes_ids[:1], no_ids[:1]) if first_only else (yes_ids, no_ids)
        if two_way:  # the softmax over the answer tokens only: the mass is always 1
            z = np.where(np.isin(np.arange(z.shape[1]), list(yes) + list(no)), z, -np.inf)
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(z) if naive else np.exp(z - z.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
        p_yes, p_no = probs[:, yes].sum(1), probs[:, no].sum(1)
        return {"p_yes": (p_yes if raw else p_yes / (p_yes + p_no)).tolist(), "mass": (p_yes + p_no).tolist()}
    return token_probability


_token_softmax_written_out = _token_with(naive=True)  # exp overflows on large logits
_token_first_spelling_only = _token_with(first_only=True)
_token_not_normalized = _token_with(raw=True)
_token_softmax_over_the_answers = _token_with(two_way=True)


def _soft_loss_with(*, unweighted: bool = False, over_all: bool = False, hard: bool = False,
                    swapped: bool = False, mixed: bool = False):  # type: ignore[no-untyped-def]
    def soft_target_loss(log_probs, targets, alt, alt_share, weights):  # type: ignore[no-untyped-def]
        logp, t, a = np.asarray(log_probs, dtype=float), np.asarray(targets), np.asarray(alt)
        s, w = np.asarray(alt_share, dtype=float), np.asarray(weights, dtype=float)
        s = 1 - s if swapped else s
        s = np.where(a == -100, 0.0, s)
        rows = np.arange(len(t))
        p, p_alt = np.exp(logp[rows, np.maximum(t, 0)]), np.exp(logp[rows, np.maximum(a, 0)])
        if mixed:  # the soft target mixed inside the log: the log of a mixture, not a mixture of logs
            per_token = -np.log((1 - s) * p + s * p_alt)
        else:
            per_token = -(1 - s) * np.log(p) - s * np.log(p_alt) * (0.0 if hard else 1.0)
            per_token = per_token if not hard else -np.log(p)
        keep = w > 0
        if over_all:
            return float((w * per_token)[keep].sum() / len(t))
        return float(per_token[keep].mean() if unweighted else (w * per_token)[keep].sum() / w[keep].sum())
    return soft_target_loss


_soft_loss_unweighted = _soft_loss_with(unweighted=True)
_soft_loss_divided_by_every_position = _soft_loss_with(over_all=True)
_soft_loss_hard_targets = _soft_loss_with(hard=True)
_soft_loss_shares_swapped = _soft_loss_with(swapped=True)
_soft_loss_mixture_inside_the_log = _soft_loss_with(mixed=True)


def _split_with(*, plain: bool = False, floor: bool = False, rng_per_class: bool = False,
                unsorted: bool = False):  # type: ignore[no-untyped-def]
    def stratified_split(labels, seed):  # type: ignore[no-untyped-def]
        import math

        labels = np.asarray(labels)
        rng = np.random.default_rng(seed)
        groups = [np.arange(len(labels))] if plain else [np.flatnonzero(labels == c) for c in np.unique(labels)]
        out = {"train": [], "val": [], "test": []}
        for rows in groups:
            rows = (np.random.default_rng(seed) if rng_per_class else rng).permutation(rows)
            cut = math.floor if floor else round
            n_train, n_val = cut(0.6 * len(rows)), cut(0.2 * len(rows))
            out["train"] += rows[:n_train].tolist()
            out["val"] += rows[n_train:n_train + n_val].tolist()
            out["test"] += rows[n_train + n_val:].tolist()
        return {k: (v if unsorted else sorted(v)) for k, v in out.items()}
    return stratified_split


_split_not_stratified = _split_with(plain=True)
_split_rounded_down = _split_with(floor=True)
_split_a_fresh_generator_per_class = _split_with(rng_per_class=True)
_split_unsorted = _split_with(unsorted=True)


def _round_with(*, hard_labels: bool = False, hard_answers: bool = False, late_labels: bool = False,
                from_zero: bool = False, no_bias: bool = False, averaged: bool = False):  # type: ignore[no-untyped-def]
    def serval_round(llm_logits, X, fit_steps, tune_steps, lr):  # type: ignore[no-untyped-def]
        z, X = np.asarray(llm_logits, dtype=float), np.asarray(X, dtype=float)
        sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
        p = sigmoid(z)
        targets = np.round(p) if hard_labels else p
        w, b = np.zeros(X.shape[1]), 0.0
        for _ in range(fit_steps):
            error = sigmoid(X @ w + b) - targets
            w, b = w - lr * X.T @ error / len(z), (b if no_bias else b - lr * error.mean())
        t = sigmoid(X @ w + b)
        answers = np.round(t) if hard_answers else t
        tuned = np.zeros_like(z) if from_zero else z
        for _ in range(tune_steps):
            tuned = tuned - lr * (sigmoid(tuned) - answers) / (len(z) if averaged else 1)
        return {"labels": (sigmoid(tuned) if late_labels else p).tolist(), "vertical": t.tolist(),
                "llm": tuned.tolist()}
    return serval_round


_round_teacher_on_rounded_labels = _round_with(hard_labels=True)
_round_hard_back_tuning = _round_with(hard_answers=True)
_round_labels_read_after_back_tuning = _round_with(late_labels=True)
_round_back_tuned_from_zero = _round_with(from_zero=True)
_round_teacher_without_bias = _round_with(no_bias=True)
_round_back_tuning_step_divided_by_n = _round_with(averaged=True)


def _cv_auc_with(scale_first: bool, scale_in_fold: bool):
    def cv_auc(X, y, k=5, seed=0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        X = StandardScaler().fit_transform(X) if scale_first else X
        aucs = []
        for train, test in StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, y):
            model = LogisticRegression(max_iter=1000)
            model = make_pipeline(StandardScaler(), model) if scale_in_fold else model
            model.fit(X[train], y[train])
            aucs.append(roc_auc_score(y[test], model.predict_proba(X[test])[:, 1]))
        return {"mean": float(np.mean(aucs)), "std": float(np.std(aucs, ddof=1))}
    return cv_auc


def _step_with(*, rounded: bool = False, summed: bool = False, ascent: bool = False,
               frozen_bias: bool = False, squared: bool = False):  # type: ignore[no-untyped-def]
    def soft_label_step(weights, bias, X, targets, lr):  # type: ignore[no-untyped-def]
        X, w = np.asarray(X, dtype=float), np.asarray(weights, dtype=float)
        t = np.asarray(targets, dtype=float)
        t = np.round(t) if rounded else t
        p = 1 / (1 + np.exp(-(X @ w + bias)))
        error = (p - t) * p * (1 - p) if squared else p - t
        scale = (1.0 if summed else 1 / len(t)) * (-lr if ascent else lr)
        return w - scale * X.T @ error, bias if frozen_bias else float(bias - scale * error.sum())
    return soft_label_step


_step_on_rounded_targets = _step_with(rounded=True)
_step_summed_not_averaged = _step_with(summed=True)
_step_uphill = _step_with(ascent=True)
_step_without_the_bias = _step_with(frozen_bias=True)
_step_of_the_squared_error = _step_with(squared=True)  # least squares on the probabilities


_cv_auc_scaled_on_all_rows = _cv_auc_with(scale_first=True, scale_in_fold=False)  # the leak
_cv_auc_unscaled = _cv_auc_with(scale_first=False, scale_in_fold=False)


def _soft_with(*, naive: bool = False, two_way: bool = False, hard: bool = False, first_id: bool = False,
               summed: bool = False):  # type: ignore[no-untyped-def]
    def soft_answer_loss(logits, yes_ids, no_ids, targets):  # type: ignore[no-untyped-def]
        from scipy.special import logsumexp

        z, t = np.asarray(logits, dtype=float), np.asarray(targets, dtype=float)
        t = np.round(t) if hard else t
        yes, no = (yes_ids[:1], no_ids[:1]) if first_id else (yes_ids, no_ids)
        if naive:  # the softmax written out: exp overflows on large logits
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
                log_yes, log_no = np.log(probs[:, yes].sum(1)), np.log(probs[:, no].sum(1))
        else:
            total = logsumexp(z[:, list(yes) + list(no)], axis=1) if two_way else logsumexp(z, axis=1)
            log_yes, log_no = logsumexp(z[:, yes], axis=1) - total, logsumexp(z[:, no], axis=1) - total
        losses = -(t * log_yes + (1 - t) * log_no)
        return float(losses.sum() if summed else losses.mean())
    return soft_answer_loss


_soft_naive_softmax = _soft_with(naive=True)
_soft_renormalized_between_yes_and_no = _soft_with(two_way=True)
_soft_hard_targets = _soft_with(hard=True)
_soft_first_spelling_only = _soft_with(first_id=True)
_soft_summed = _soft_with(summed=True)


def _mask_padding_by_id(input_ids, answer_starts, lengths):
    """Padding found by its id: with pad == EOS the answer's end is masked too."""
    pad = input_ids[0][-1]
    return [[-100 if (j < start or token == pad) else token for j, token in enumerate(row)]
            for row, start in zip(input_ids, answer_starts)]


def _mask_the_answer_start_too(input_ids, answer_starts, lengths):
    return [[-100 if (j <= start or j >= length) else token for j, token in enumerate(row)]
            for row, start, length in zip(input_ids, answer_starts, lengths)]


PLAUSIBLE_MISTAKES = {  # exercise -> wrong answers a student could well write
    "10.pick": [_pick_per_token, _pick_per_word, _pick_ties_last],
    "10.rouge_l": [_rouge_recall, _rouge_precision, _rouge_whitespace_split, _rouge_lower_whitespace_split,
                   _rouge_unigram_overlap, _rouge_set_overlap, _rouge_longest_common_substring,
                   _rouge_stemmed],
    "10.bleu": [_bleu_unclipped, _bleu_mean_of_sentences, _bleu_without_brevity_penalty,
                _bleu_arithmetic_mean, _bleu_penalty_when_longer_too, _bleu_up_to_bigrams, _bleu_always_four,
                _bleu_lower_case, _bleu_split_on_spaces, _bleu_clipped_by_the_whole_corpus],
    "09.bradley_terry": [_bt_without_the_minus, _bt_summed],
    "09.dpo": [_dpo_without_reference, _dpo_beta_outside],
    "09.group": [_groups_population_std, _groups_over_the_batch],
    "09.kl_reward": [_kl_score_on_the_last_column, _kl_on_the_padding_too],
    "08.template": [_chatml_without_newlines, _chatml_without_generation_prompt],
    "08.mask": [_labels_shifted, _labels_every_answer_always],
    "08.pack": [_pack_first_fit, _pack_in_file_order],
    "08.attention": [_attention_causal_over_the_row, _attention_both_ways_in_an_example],
    "07.ledger": [_ledger_without_master_copy, _ledger_quantizing_trained_weights],
    "07.lora": [_lora_scaled_by_rank_always, _lora_without_bias],
    "07.budget": [_budget_strictly_under, _budget_without_activations],
    "04.mask": [_mask_padding_by_id, _mask_the_answer_start_too],
    "04.soft": [_soft_naive_softmax, _soft_renormalized_between_yes_and_no, _soft_hard_targets,
                _soft_first_spelling_only, _soft_summed],
    "A1.soft_loss": [_soft_loss_unweighted, _soft_loss_divided_by_every_position, _soft_loss_hard_targets,
                     _soft_loss_shares_swapped, _soft_loss_mixture_inside_the_log],
    "00.split": [_split_not_stratified, _split_rounded_down, _split_a_fresh_generator_per_class,
                 _split_unsorted],
    "01.token": [_token_softmax_written_out, _token_first_spelling_only, _token_not_normalized,
                 _token_softmax_over_the_answers],
    "02.cv_auc": [_cv_auc_scaled_on_all_rows, _cv_auc_unscaled],
    "02.soft_step": [_step_on_rounded_targets, _step_summed_not_averaged, _step_uphill,
                     _step_without_the_bias, _step_of_the_squared_error],
    "05.round": [_round_teacher_on_rounded_labels, _round_hard_back_tuning, _round_labels_read_after_back_tuning,
                 _round_back_tuned_from_zero, _round_teacher_without_bias, _round_back_tuning_step_divided_by_n],
    "05.change": [_change_unpaired, _change_one_class_as_no_change, _change_normal_interval,
                  _change_90_percent, _change_reversed],
    "05.summary": [_summary_best_by_test_auc, _summary_without_the_last_back_tuning, _summary_as_a_fraction],
    "03.forward": [_forward_transposed, _forward_uncorrected, _forward_unclamped, _forward_column_sums,
                   _forward_corrects_the_target, _forward_mean],
}


@pytest.mark.parametrize(("exercise_id", "mistake"),
                         [(e, m) for e, ms in PLAUSIBLE_MISTAKES.items() for m in ms],
                         ids=lambda v: v if isinstance(v, str) else v.__name__.strip("_"))
def test_plausible_mistakes_fail_the_hidden_cases(exercise_id: str, mistake: Any) -> None:
    exercise = bank.get(exercise_id)
    failed = 0
    for hidden in exercise.hidden(np.random.default_rng(3)):
        expected = to_plain(hidden.call(exercise.reference))
        failed += exercise.compare(to_plain(hidden.call(mistake)), expected) is not None
    assert failed > 0


def test_attempt_runs_a_written_function_and_skips_one_not_written_yet(
        capsys: pytest.CaptureFixture[str]) -> None:
    from labkit.grading import attempt

    def written(x: int) -> int:
        return 2 * x

    def not_written(x: int) -> int:
        raise NotImplementedError

    def broken(x: int) -> int:
        raise ValueError("a bug")

    assert attempt(written, 4) == 8 and capsys.readouterr().out == ""
    assert attempt(not_written, 4) is None
    assert "`not_written` is not written yet" in capsys.readouterr().out
    with pytest.raises(ValueError, match="a bug"):  # a bug is the student's to see, not skipped
        attempt(broken, 4)


def test_exercise_definitions_are_validated() -> None:
    with pytest.raises(ValueError, match="id must look like"):
        Exercise(id="warmup", function="f", tier="core", points=1, task="", reference=len,
                 examples=(case([1]),), hidden=lambda rng: [])
    with pytest.raises(ValueError, match="tier 'easy'.*at least one visible example"):
        Exercise(id="01.x", function="f", tier="easy", points=1, task="",  # type: ignore[arg-type]
                 reference=len, examples=(), hidden=lambda rng: [])
    with pytest.raises(KeyError, match="known exercises: 00.warmup"):
        bank.get("99.nothing")


def test_check_finds_the_function_in_the_calling_notebook(capsys: pytest.CaptureFixture[str]) -> None:
    attempts = {
        "missing": "x = 1",
        "not attempted": "def missing_share(frame):\n    raise NotImplementedError",
        "failed": "def missing_share(frame):\n    return {c: 0.0 for c in frame.columns}",
        "passed": "def missing_share(frame):\n" + SOLUTION,
    }
    for status, code in attempts.items():
        namespace: dict[str, Any] = {"check": check}
        exec(code + "\ncheck('00.warmup')", namespace)  # check() is called from this namespace
        printed = capsys.readouterr().out
        assert printed.startswith(f"00.warmup (warm-up, 1 point): {status}\n"), printed
    namespace = {"missing_share": lambda frame: {c: 0.0 for c in frame.columns}}
    assert "example 1: missing_share(<DataFrame 4x2>): got 0.0 at ['age'], expected 0.25" in \
        run_check("00.warmup", namespace).summary()


def test_close_compares_plain_data() -> None:
    same = close(rtol=1e-6)
    assert same({"a": [1.0, float("nan")]}, {"a": [1.0000001, float("nan")]}) is None
    assert same(2, 2.0) is None
    assert "expected 0.5" in same(0.6, 0.5)
    assert "keys differ: missing ['b']" in same({"a": 1}, {"a": 1, "b": 2})
    assert "got 1 elements, expected 2" in same([1], [1, 2])
    assert "expected the number" in same(True, 1)  # a bool is not a number here
    assert "expected the number" in same("0.5", 0.5)


def test_to_plain_keeps_data_and_refuses_objects() -> None:
    frame = pd.DataFrame({"a": [1.0, np.nan]})
    assert to_plain((np.float32(0.5), np.arange(2), frame["a"].isna().mean())) == [0.5, [0, 1], 0.5]
    assert to_plain(frame.isna().mean()) == {"a": 0.5}
    assert to_plain(frame.isna()) == {"a": [False, True]}

    class Equal(dict):
        def __eq__(self, other: object) -> bool:
            return True

    class Number(float):
        pass

    for sneaky in (Equal(), Number(0.5), object()):
        with pytest.raises(TypeError, match="returned an object of type"):
            to_plain(sneaky)


def test_definitions_keep_imports_functions_classes_and_constants_only() -> None:
    nb = notebook(
        "import numpy as np\nfrom labkit.grading import check\nimport labkit.grading.bank",
        "N_BINS = 10\nSCALE: float = 2.0 * N_BINS\nFRAME = load('pima')\nf = lambda x: x + 1",
        "%matplotlib inline\n@staticmethod\ndef g(x):\n    return x\nclass C:\n    pass",
        "np.isclose = lambda *a: True\nprint('hi')\ncheck('00.warmup')",
        "def broken(:\n    pass",
    )
    chunks, notes = definitions(nb)
    assert chunks == ["import numpy as np", "N_BINS = 10", "SCALE: float = 2.0 * N_BINS",
                      "f = lambda x: x + 1", "@staticmethod\ndef g(x):\n    return x",
                      "class C:\n    pass"]
    assert notes == ["cell 4 was skipped: SyntaxError: invalid syntax (line 1)"]


def test_lesson_comes_from_the_file_name_then_from_check_calls() -> None:
    assert lesson_of(Path("00_welcome.ipynb"), {}) == "00"
    assert lesson_of(Path("alice_A1_pretrain.ipynb"), {}) == "A1"
    assert lesson_of(Path("alice.ipynb"), notebook("check('01.ece')")) == "01"
    assert lesson_of(Path("2024_alice.ipynb"), {}) is None


# --- the grader end to end ---------------------------------------------------------------------

@pytest.mark.slow
def test_cheating_submissions_score_nothing(tmp_path: Path) -> None:
    """Every notebook in tests/cheats fakes exercise 00.warmup its own way; an honest one scores."""
    honest = write(tmp_path / "00_honest.ipynb", "def missing_share(frame):\n" + SOLUTION)
    out = tmp_path / "grades"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # run as a teacher would, so the fake-report cheat can find the --out folder of this process
    done = subprocess.run([sys.executable, "-m", "labkit", "grade", str(ROOT / "tests" / "cheats"),
                           str(honest), "--out", str(out), "--seed", "7", "--exercise-timeout", "30"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(CHEATS) >= 9
    rows = {row["submission"]: row for row in csv.DictReader(open(out / "grades.csv"))}
    assert rows["00_honest"]["total"] == "1"
    for cheat in CHEATS:
        report = json.loads((out / f"{cheat.stem}.json").read_text())
        assert (report["total"], rows[cheat.stem]["total"]) == (0, "0"), cheat.stem
        # every exercise of lesson 00 is graded, the faked one (00.warmup) among them, and none passes
        assert "00.warmup" in [e["id"] for e in report["exercises"]], cheat.stem
        assert not any(e["passed"] for e in report["exercises"]), cheat.stem
        printed = outputs_text(out / f"{cheat.stem}.executed.ipynb")
        assert "CHEAT ACTIVE" in printed, f"{cheat.stem}: the cheat did not run"
        if cheat.stem in FOOLS_CHECK:
            assert "00.warmup (warm-up, 1 point): passed" in printed, cheat.stem
    assert json.loads((out / "report.json").read_text())["total"] == 1  # the fake was written...
    assert json.loads((out / "00_fake_report.json").read_text())["total"] == 0  # ...and ignored


@pytest.mark.slow
def test_crashing_looping_and_broken_submissions_get_reports(tmp_path: Path) -> None:
    folder = tmp_path / "submissions"
    folder.mkdir()
    write(folder / "00_crash.ipynb", "def missing_share(frame):\n" + SOLUTION,
          "raise RuntimeError('boom')")
    write(folder / "00_loop.ipynb", "def missing_share(frame):\n    while True:\n        pass",
          "while True:\n    pass")
    write(folder / "00_kill.ipynb", "import os\nos._exit(1)")
    (folder / "00_garbage.ipynb").write_text("this is not a notebook")
    (folder / "00_list.ipynb").write_text("[1, 2]")
    out = tmp_path / "grades"
    args = [str(folder), "--out", str(out), "--seed", "1", "--timeout", "8",
            "--exercise-timeout", "3"]
    assert main(args) == 0
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    crash, loop = reports["00_crash"], reports["00_loop"]
    assert crash["execution"]["status"] == "error" and "RuntimeError: boom" in crash["errors"][0]
    assert crash["total"] == 1  # the function itself is right
    assert loop["execution"]["status"] == "timeout"
    assert loop["exercises"][0]["message"].startswith("timed out")
    assert reports["00_kill"]["execution"]["status"] == "error"
    assert "not a readable notebook" in reports["00_garbage"]["errors"][0]
    assert reports["00_list"]["errors"] == ["not a notebook: no list of cells"]
    assert all(r["total"] == 0 for name, r in reports.items() if name != "00_crash")
    assert (out / "grades.csv").read_text().count("\n") == 6  # a header and 5 submissions

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert main([*args, "--resume"]) == 0  # nothing to redo
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == stamps


LESSONS = sorted({p.name[:2] for p in (ROOT / "solutions").glob("*.ipynb")
                  if bank.exercises(p.name[:2])})


@pytest.mark.slow
@pytest.mark.parametrize("lesson", LESSONS)
def test_solutions_score_full_marks_and_student_notebooks_score_zero(lesson: str,
                                                                    tmp_path: Path) -> None:
    """The acceptance check of every lesson with exercises: `labkit grade` on both versions."""
    [solution] = (ROOT / "solutions").glob(f"{lesson}_*.ipynb")
    student = ROOT / "notebooks" / solution.name
    solved = grade_submission(solution, seed=3, timeout=600)
    assert solved.full_marks and not solved.errors, solved
    unsolved = grade_submission(student, seed=3, timeout=600)
    assert unsolved.execution["status"] == "ok", unsolved.execution
    assert unsolved.total == 0 and not unsolved.errors
    assert all(e.message.startswith("not attempted") for e in unsolved.exercises)
