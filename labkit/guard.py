"""A guard for the SERVAL loop: a few gold validation labels, and the label-free warning signs.

The paper's premise is an LLM with real domain knowledge. Where it knows little about a task, the
loop can make both models worse, and nothing in a label-free run shows it. Two remedies:

1. **A gold sample** (`ServalConfig.val_labels`): a few dozen validation rows with their gold labels,
   drawn stratified by class, never from the test split. Every state of the LLM (zero-shot, after
   each back-tuning) and every vertical model is scored on them (AUC). A back-tuned LLM replaces
   the kept one when it scores higher, on the rows and on at least ADOPT of their bootstrap
   resamples; the loop stops when a back-tuning lowers the LLM beyond the noise of so few rows:
   when the upper end of the paired bootstrap 95% interval of AUC(new) - AUC(kept) is below zero
   (Efron & Tibshirani 1993, ch. 13). The vertical model kept is the one that scores highest;
   when it ranks the rows worse than the kept LLM beyond their noise (the same paired interval),
   the report says so: the LLM's answers are then the better labels of the two.
2. **Warning signs** that need no label, read from the run's records (`signs`, `warnings`).

How both were chosen (on development tasks) and what they catch on the reported ones:
`benchmarks/serval_guard.py`, docs/serval_guard.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.stats import rankdata

from labkit import metrics

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95  # of the bootstrap intervals
# A back-tuned LLM replaces the kept state when it scores higher on the gold rows and on at least
# this share of their resamples (chosen on the development tasks: docs/serval_guard.md).
ADOPT = 0.9
# Below this Spearman correlation between the first vertical model and the LLM's labels it learned
# from (signs: vertical_follows), the run warns (set on the development tasks, docs/serval_guard.md).
LOOSE = 0.6


def gold_rows(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of n rows drawn stratified by class (each class as in `labels`, at least 2
    of each): the rows whose gold labels the guard may read."""
    labels = np.asarray(labels).astype(int)
    counts = np.bincount(labels, minlength=2)
    if n > labels.size:
        raise ValueError(f"val_labels: asked for {n} gold rows but the validation split has "
                         f"{labels.size}; use at most {labels.size}")
    if counts.min() < 2:
        raise ValueError(f"val_labels: the validation split has {counts[0]} negatives and {counts[1]} "
                         "positives; an AUC needs at least 2 of each: run without gold labels")
    if n < 4:
        raise ValueError(f"val_labels: {n} rows cannot score an AUC with 2 of each class; use at least 4")
    positives = int(np.clip(round(n * counts[1] / labels.size), 2, min(counts[1], n - 2)))
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == 1), positives, replace=False),
              rng.choice(np.flatnonzero(labels == 0), n - positives, replace=False)]
    return np.sort(np.concatenate(picked))


def auc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The AUC of each row of `scores` (2-D) against the same row of `labels` (0/1), as
    metrics.auc computes it (Mann-Whitney U, ties count one half); every row needs both classes."""
    positives = labels.sum(axis=1)
    ranks = rankdata(scores, axis=1)
    u = (ranks * labels).sum(axis=1) - positives * (positives + 1) / 2
    return u / (positives * (labels.shape[1] - positives))


def bootstrap_draws(n: int, seed: int, samples: int = BOOTSTRAP_SAMPLES) -> np.ndarray:
    """(samples, n) row indices, each row a resample of the n rows with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _resampled_auc(labels: np.ndarray, scores: Sequence[np.ndarray], draws: np.ndarray) -> np.ndarray:
    """(draws with both classes, len(scores)): each score's AUC on the same resamples; a resample
    that holds a single class is left out (an AUC needs both)."""
    positives = labels[draws].sum(axis=1)
    draws = draws[(positives > 0) & (positives < labels.size)]
    return np.stack([auc_rows(labels[draws], p[draws]) for p in scores], axis=1)


def _resampled_changes(labels: np.ndarray, p_best: np.ndarray, p_new: np.ndarray,
                       draws: np.ndarray) -> np.ndarray:
    """AUC(p_new) - AUC(p_best) on each resample of the rows that holds both classes."""
    resampled = _resampled_auc(labels, [p_best, p_new], draws)
    return resampled[:, 1] - resampled[:, 0]


def change_interval(labels: np.ndarray, p_best: np.ndarray, p_new: np.ndarray,
                    draws: np.ndarray) -> tuple[float, float, float]:
    """AUC(p_new) - AUC(p_best) on the rows, and the 95% paired bootstrap interval of that change:
    both scored on the same resampled rows (`draws`), which cancels the luck of the sample they
    share (lesson 05 has the student write it)."""
    labels = np.asarray(labels).astype(int)
    low, high = _interval(_resampled_changes(labels, p_best, p_new, draws))
    return metrics.auc(labels, p_new) - metrics.auc(labels, p_best), low, high


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _filled(p: np.ndarray) -> np.ndarray:
    """A missing answer (NaN) scores 0.5 on the gold rows: it knows nothing, and is not dropped."""
    return np.where(np.isnan(p), 0.5, p)


@dataclass
class GoldReport:
    """What the gold sample saw. LLM states are numbered from 0 (zero-shot; k: after the k-th
    back-tuning), vertical models from 1 (trained in iteration k)."""

    rows: int
    llm_auc: list[float] = field(default_factory=list)
    llm_interval: list[tuple[float, float]] = field(default_factory=list)
    vertical_auc: list[float] = field(default_factory=list)
    vertical_interval: list[tuple[float, float]] = field(default_factory=list)
    # per back-tuning k: AUC(state k) - AUC(the state kept before it), and its interval
    llm_change: list[tuple[float, float, float]] = field(default_factory=list)
    llm_better: list[float] = field(default_factory=list)  # share of resamples where state k scored higher
    kept_llm: int = 0
    kept_vertical: int = 0  # 0: no vertical model was trained
    stopped_after: int | None = None  # the back-tuning that lowered the LLM beyond its noise
    # AUC(kept vertical model) - AUC(kept LLM) on the rows, and its interval (None: no vertical model)
    vertical_vs_llm: tuple[float, float, float] | None = None

    @property
    def vertical_below_llm(self) -> bool:
        """The kept vertical model ranks the gold rows worse than the kept LLM beyond their noise."""
        return self.vertical_vs_llm is not None and self.vertical_vs_llm[2] < 0

    def lines(self) -> list[str]:
        """What the run summary prints about it."""
        out = [f"gold validation rows: {self.rows}; LLM AUC on them per state "
               + _scored(self.llm_auc, self.llm_interval, first=0)]
        if self.stopped_after is not None:
            change, low, high = self.llm_change[self.stopped_after - 1]
            out.append(f"back-tuning {self.stopped_after} lowered the LLM's gold AUC by {-change:.3f} "
                       f"(95% interval of the change [{low:+.3f}, {high:+.3f}]): the loop stopped there")
        if self.vertical_auc:
            out.append("vertical model AUC on them per iteration "
                       + _scored(self.vertical_auc, self.vertical_interval, first=1))
        out.append(f"kept: the LLM after {self.kept_llm} back-tuning(s), the vertical model of "
                   f"iteration {self.kept_vertical}")
        if self.vertical_below_llm and self.vertical_vs_llm is not None:
            change, low, high = self.vertical_vs_llm
            out.append(f"the vertical model kept ranks the gold rows worse than the LLM kept (AUC "
                       f"{change:+.3f}, 95% interval [{low:+.3f}, {high:+.3f}]): use the LLM's answers, "
                       "not the vertical model")
        return out


def _scored(aucs: Sequence[float], intervals: Sequence[tuple[float, float]], first: int) -> str:
    return ", ".join(f"{k}: {a:.3f} [{lo:.2f}, {hi:.2f}]"
                     for k, (a, (lo, hi)) in enumerate(zip(aucs, intervals, strict=True), first))


def judge(labels: np.ndarray, llm_states: Sequence[np.ndarray], verticals: Sequence[np.ndarray],
          seed: int, adopt: float = ADOPT) -> GoldReport:
    """Walk the LLM states in order, as the loop made them, and decide what to keep.

    labels: the gold labels of the sample rows; llm_states[k]: the LLM's answers on them after k
    back-tunings; verticals[k - 1]: iteration k's vertical model on them. A state replaces the
    kept one when it scores higher on the rows and on at least `adopt` of the resamples. The walk
    stops at the first back-tuning whose change against the kept state is below zero beyond the
    bootstrap interval; states after it are ignored (a loop guarded online never makes them). The
    vertical model kept is the one with the highest AUC on the rows.
    """
    y = np.asarray(labels).astype(int)
    states = [_filled(np.asarray(p, dtype=float)) for p in llm_states]
    report = GoldReport(rows=int(y.size))
    draws = bootstrap_draws(y.size, seed)
    best = 0
    for k, p in enumerate(states):
        report.llm_auc.append(metrics.auc(y, p))
        report.llm_interval.append(_interval(_resampled_auc(y, [p], draws)[:, 0]))
        if k == 0:
            continue
        changes = _resampled_changes(y, states[best], p, draws)
        low, high = _interval(changes)
        report.llm_change.append((report.llm_auc[k] - report.llm_auc[best], low, high))
        report.llm_better.append(float(np.mean(changes > 0)))
        if high < 0:
            report.stopped_after = k
            break
        if report.llm_auc[k] > report.llm_auc[best] and report.llm_better[-1] >= adopt:
            best = k
    report.kept_llm = best
    last = report.stopped_after or len(states)
    vertical = [_filled(np.asarray(p, dtype=float)) for p in verticals[:last]]
    report.vertical_auc = [metrics.auc(y, p) for p in vertical]
    report.vertical_interval = [_interval(_resampled_auc(y, [p], draws)[:, 0]) for p in vertical]
    if vertical:
        report.kept_vertical = 1 + int(np.argmax(report.vertical_auc))  # the first of equals
        report.vertical_vs_llm = change_interval(y, states[best], vertical[report.kept_vertical - 1], draws)
    return report


class _Record(Protocol):
    """What the warning signs read of a SERVAL iteration (labkit.serval.IterationRecord)."""

    iteration: int
    answer_spread: float
    annotator_agreement: dict[str, Any]
    refused: bool
    backtune_epoch: int
    backtune_agreement: list[float]


def signs(records: Sequence[_Record]) -> dict[str, float]:
    """The label-free measurements behind the warnings, from a run's records:

    answer_spread: standard deviation of the LLM's first answers (an annotator that barely
      varies its answer has little to teach);
    vertical_follows: Spearman of the first vertical model against the LLM's labels, on the
      validation rows (labkit.noisy.check_agreement; near 0: the model found no pattern in them);
    copy: Spearman of the LLM's answers against the first vertical model's, on the validation rows,
      before back-tuning (near 1: the student copies the teacher, there is nothing to learn back);
    moved_away: share of back-tunings after which no epoch ranked the rows more like the vertical
      model than before (the LLM cannot follow its student);
    refused: 1 when a vertical model failed the agreement check.
    """
    first = records[0]
    tunings = [r for r in records if r.backtune_agreement]
    return {
        "answer_spread": first.answer_spread,
        "vertical_follows": float(first.annotator_agreement.get("spearman", float("nan"))),
        "copy": first.backtune_agreement[0] if first.backtune_agreement else float("nan"),
        "moved_away": (float(np.mean([r.backtune_epoch == 0 for r in tunings])) if tunings
                       else float("nan")),
        "refused": float(any(r.refused for r in records)),
    }


def fired(records: Sequence[_Record]) -> list[str]:
    """The names of the warning signs that fired on a run: "refused" (a vertical model failed the
    agreement check; the loop stopped there) or "loose" (the first vertical model follows the
    LLM's labels only loosely: `signs`' vertical_follows below LOOSE)."""
    if any(r.refused for r in records):
        return ["refused"]
    return ["loose"] if signs(records)["vertical_follows"] < LOOSE else []


def warnings(records: Sequence[_Record]) -> list[str]:
    """The warning signs that fired on a run (see `fired`), as sentences for its summary."""
    out = []
    for name in fired(records):
        if name == "refused":
            record = next(r for r in records if r.refused)
            rho, p_value = (record.annotator_agreement.get(k) for k in ("spearman", "p_value"))
            out.append(f"iteration {record.iteration}: the vertical model does not rank the rows as the LLM "
                       f"labelled them (Spearman {rho}, p = {p_value}): the LLM's labels may hold no "
                       "pattern a vertical model can learn; the loop stopped there")
        else:
            follows = signs(records)["vertical_follows"]
            out.append(f"the vertical model follows the LLM's labels only loosely (Spearman {follows:.2f} on "
                       f"the validation rows, below {LOOSE}): no simple pattern of the features explains "
                       "them, as when the LLM knows little about the task; the loop may help or hurt and "
                       "nothing label-free says which: check it on a few gold labels (val_labels)")
    return out
