"""The SERVAL guard: which gold rows it reads, how it scores them, and what it keeps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from labkit import guard, metrics


def test_gold_rows_are_stratified_seeded_and_inside_the_split() -> None:
    labels = np.array([1] * 12 + [0] * 88)
    rows = guard.gold_rows(labels, 25, seed=3)
    assert len(set(rows.tolist())) == 25 and rows.max() < labels.size
    assert labels[rows].sum() == 3  # 12% of 25, rounded
    np.testing.assert_array_equal(rows, guard.gold_rows(labels, 25, seed=3))
    assert not np.array_equal(rows, guard.gold_rows(labels, 25, seed=4))
    # a rare class still gets the two rows an AUC needs
    assert guard.gold_rows(np.array([1] * 3 + [0] * 97), 10, seed=0).size == 10
    assert guard.gold_rows(np.array([1] * 3 + [0] * 97), 10, seed=0).tolist() != []
    assert np.array([1] * 3 + [0] * 97)[guard.gold_rows(np.array([1] * 3 + [0] * 97), 10, 0)].sum() == 2


@pytest.mark.parametrize(("labels", "n", "message"), [
    (np.array([1, 0] * 10), 30, "validation split has 20"),
    (np.array([1] + [0] * 30), 10, "1 positives"),
    (np.array([1, 0] * 10), 3, "at least 4"),
])
def test_gold_rows_refuses_what_cannot_be_scored(labels: np.ndarray, n: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        guard.gold_rows(labels, n, seed=0)


def test_the_vectorized_auc_is_metrics_auc_with_ties() -> None:
    rng = np.random.default_rng(0)
    labels = np.stack([rng.permutation([1] * 4 + [0] * 9) for _ in range(20)])
    scores = np.round(rng.random((20, 13)), 1)  # rounded: ties
    expected = [metrics.auc(y, p) for y, p in zip(labels, scores, strict=True)]
    np.testing.assert_allclose(guard.auc_rows(labels, scores), expected)


def _noisy_ranking(labels: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1 / (1 + np.exp(-(3 * (labels - 0.5) + noise * rng.standard_normal(labels.size))))


LABELS = np.array([1] * 20 + [0] * 30)


def test_a_back_tuning_that_lowers_the_llm_beyond_its_noise_stops_the_loop_and_rolls_back() -> None:
    good, worse = _noisy_ranking(LABELS, 1.0, 0), _noisy_ranking(LABELS, 20.0, 1)
    report = guard.judge(LABELS, [good, worse, good], [good, good, good], seed=0)
    assert report.llm_auc[1] < report.llm_auc[0] - 0.2
    change, low, high = report.llm_change[0]
    assert change == pytest.approx(report.llm_auc[1] - report.llm_auc[0]) and low < change < high < 0
    assert report.stopped_after == 1 and report.kept_llm == 0
    assert len(report.llm_auc) == 2  # the state after the stop is never looked at
    assert len(report.vertical_auc) == 1 and report.kept_vertical == 1
    assert "lowered the LLM's gold AUC" in "\n".join(report.lines())


def test_a_change_within_the_noise_goes_on_and_a_state_is_adopted_only_on_enough_resamples() -> None:
    states = [_noisy_ranking(LABELS, 2.5, seed) for seed in (0, 1, 2)]
    lenient = guard.judge(LABELS, states, [states[2], states[0]], seed=0, adopt=0.0)
    assert lenient.stopped_after is None and len(lenient.llm_auc) == 3
    assert lenient.kept_llm == int(np.argmax(lenient.llm_auc))  # adopt 0: the best on the rows
    assert lenient.kept_vertical == (2 if lenient.vertical_auc[1] > lenient.vertical_auc[0] else 1)
    for auc, (low, high) in zip(lenient.llm_auc, lenient.llm_interval, strict=True):
        assert low <= auc <= high and high - low > 0.05  # 50 rows: a wide interval
    strict = guard.judge(LABELS, states, [states[2], states[0]], seed=0, adopt=0.99)
    assert strict.kept_llm == 0 and max(strict.llm_better) < 0.99  # no change is that sure
    sure = guard.judge(LABELS, [states[0], _noisy_ranking(LABELS, 0.5, 3)], [], seed=0, adopt=0.99)
    assert sure.kept_llm == 1


def test_equal_states_keep_the_earlier_one_and_missing_answers_score_one_half() -> None:
    p = _noisy_ranking(LABELS, 2.0, 0)
    assert guard.judge(LABELS, [p, p.copy()], [p], seed=0).kept_llm == 0
    missing = p.copy()
    missing[LABELS == 1] = np.nan  # every positive unanswered: they all tie at 0.5
    report = guard.judge(LABELS, [p, missing], [p], seed=0)
    assert report.llm_auc[1] == pytest.approx(metrics.auc(LABELS, np.where(np.isnan(missing), 0.5, p)))


def test_a_vertical_model_worse_than_the_kept_llm_beyond_the_noise_is_reported() -> None:
    llm = _noisy_ranking(LABELS, 1.0, 0)
    inverted = _noisy_ranking(1 - LABELS, 1.0, 1)  # a vertical model that learned the wrong way round
    report = guard.judge(LABELS, [llm, llm, llm], [inverted, _noisy_ranking(LABELS, 8.0, 2)], seed=0)
    change, low, high = report.vertical_vs_llm or (0.0, 0.0, 0.0)
    kept = report.vertical_auc[report.kept_vertical - 1]
    assert change == pytest.approx(kept - report.llm_auc[0]) and low < change < high < 0
    assert report.vertical_below_llm and "use the LLM's answers" in "\n".join(report.lines())
    printed = "\n".join(report.lines())
    assert all(f"{k}: {a:.3f}" in printed for k, a in enumerate(report.vertical_auc, 1))
    close = guard.judge(LABELS, [llm], [_noisy_ranking(LABELS, 1.0, 3)], seed=0)
    assert not close.vertical_below_llm and "use the LLM's answers" not in "\n".join(close.lines())
    assert guard.judge(LABELS, [llm], [], seed=0).vertical_vs_llm is None


def _record(iteration: int, follows: float, refused: bool = False, epoch: int = 2) -> SimpleNamespace:
    return SimpleNamespace(iteration=iteration, answer_spread=0.2, refused=refused, backtune_epoch=epoch,
                           annotator_agreement={"spearman": follows, "p_value": 0.2 if refused else 0.001},
                           backtune_agreement=[] if refused else [0.9, 0.95])


def test_a_loose_vertical_model_warns_and_a_close_one_does_not() -> None:
    close_run = [_record(1, guard.LOOSE + 0.2), _record(2, 0.9)]
    loose_run = [_record(1, guard.LOOSE - 0.1), _record(2, 0.9)]
    assert guard.fired(close_run) == [] and guard.warnings(close_run) == []
    assert guard.fired(loose_run) == ["loose"]
    (warning,) = guard.warnings(loose_run)
    assert f"Spearman {guard.LOOSE - 0.1:.2f}" in warning and "val_labels" in warning
    assert guard.signs(loose_run)["vertical_follows"] == pytest.approx(guard.LOOSE - 0.1)
    assert guard.signs([_record(1, 0.9, epoch=0), _record(2, 0.9)])["moved_away"] == 0.5


def test_a_refused_vertical_model_is_the_warning() -> None:
    run = [_record(1, 0.9), _record(2, 0.1, refused=True)]
    assert guard.fired(run) == ["refused"] and guard.signs(run)["refused"] == 1.0
    (warning,) = guard.warnings(run)
    assert warning.startswith("iteration 2:") and "Spearman 0.1" in warning
