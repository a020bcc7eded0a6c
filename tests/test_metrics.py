"""Metrics against examples computed by hand (the arithmetic is written out beside each)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from scipy.special import expit

from labkit import metrics
from labkit.metrics import MissingPredictionError, PlattScaling, TemperatureScaling


def test_auc_by_hand() -> None:
    # positives score 0.35, 0.8; negatives 0.1, 0.4. Pairs (pos > neg?):
    # 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes  ->  3 of 4 = 0.75
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75


def test_auc_counts_ties_as_one_half() -> None:
    # positives 0.5, 0.9; negatives 0.5, 0.2. Pairs: 0.5 vs 0.5 tie -> 1/2, 0.5>0.2 -> 1,
    # 0.9>0.5 -> 1, 0.9>0.2 -> 1  ->  3.5 / 4 = 0.875
    assert metrics.auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == 0.875


def test_accuracy_f1_brier_by_hand() -> None:
    y = [1, 1, 0, 0, 1]
    p = [0.9, 0.4, 0.6, 0.1, 0.5]
    # decisions at 0.5: 1, 0, 1, 0, 1 -> correct: yes, no, no, yes, yes -> 3/5
    assert metrics.accuracy(y, p) == 0.6
    # TP = 2 (rows 0, 4), FP = 1 (row 2), FN = 1 (row 1): F1 = 2*2 / (2*2 + 1 + 1) = 4/6
    assert metrics.f1(y, p) == pytest.approx(4 / 6)
    # squared errors: 0.01, 0.36, 0.36, 0.01, 0.25 -> sum 0.99 -> mean 0.198
    assert metrics.brier(y, p) == pytest.approx(0.198)


# Four predictions where equal-width and equal-mass bins differ.
Y = [0, 0, 1, 1]
P = [0.1, 0.2, 0.3, 0.8]


def test_ece_equal_width_by_hand() -> None:
    # 2 bins [0, 0.5) and [0.5, 1]:
    #   [0, 0.5): p 0.1, 0.2, 0.3 -> confidence 0.2, frequency 1/3, |gap| 2/15, weight 3/4 -> 0.1
    #   [0.5, 1]: p 0.8           -> confidence 0.8, frequency 1,   |gap| 0.2,  weight 1/4 -> 0.05
    assert metrics.ece(Y, P, n_bins=2, strategy="width") == pytest.approx(0.15)


def test_ece_equal_mass_by_hand() -> None:
    # 2 bins of two predictions each:
    #   {0.1, 0.2}: confidence 0.15, frequency 0, |gap| 0.15, weight 1/2 -> 0.075
    #   {0.3, 0.8}: confidence 0.55, frequency 1, |gap| 0.45, weight 1/2 -> 0.225
    assert metrics.ece(Y, P, n_bins=2, strategy="mass") == pytest.approx(0.3)


def test_reliability_table_keeps_empty_bins_and_puts_edges_where_they_belong() -> None:
    table = metrics.reliability([0, 1, 1, 0], [0.0, 0.5, 1.0, 0.25], n_bins=4)
    # 0.0 -> [0, .25); 0.25 -> [.25, .5); 0.5 -> [.5, .75); 1.0 -> the closed last bin [.75, 1]
    assert table["count"].tolist() == [1, 1, 1, 1]
    table = metrics.reliability([0, 1], [0.1, 0.9], n_bins=3)
    assert table["count"].tolist() == [1, 0, 1] and np.isnan(table["gap"].iloc[1])
    assert table["gap"].iloc[[0, 2]].tolist() == pytest.approx([-0.1, 0.1])


def test_missing_predictions_are_refused_not_dropped() -> None:
    with pytest.raises(MissingPredictionError, match=r"2 of 4 predictions are missing.*\[1, 3\]"):
        metrics.ece([0, 1, 0, 1], [0.2, np.nan, 0.4, np.nan])
    for metric in (metrics.auc, metrics.accuracy, metrics.f1, metrics.brier):
        with pytest.raises(MissingPredictionError):
            metric([0, 1], [0.3, np.nan])
    report = metrics.binary_report([0, 1, 0, 1, 1], [0.2, 0.9, np.nan, 0.4, 0.6], missing="drop")
    assert report["n"] == 4 and report["n_missing"] == 1
    # the remaining rows: positives 0.9, 0.4, 0.6 vs the negative 0.2 -> all pairs right
    assert report["auc"] == 1.0
    with pytest.raises(MissingPredictionError):
        metrics.binary_report([0, 1], [np.nan, 0.5])


def test_bad_input_gets_a_clear_error() -> None:
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        metrics.brier([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="3 predictions but y has 2"):
        metrics.brier([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        metrics.brier([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="needs both classes"):
        metrics.auc([1, 1], [0.1, 0.2])


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z); the model reports sigmoid(3 z): three times too sharp."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < expit(z)).astype(int)
    return y, expit(3.0 * z)


def test_temperature_scaling_recovers_the_temperature_on_validation_data() -> None:
    y_val, p_val = _overconfident(20_000, seed=0)
    y_test, p_test = _overconfident(20_000, seed=1)
    scaler = TemperatureScaling().fit(p_val, y_val)
    assert scaler.temperature == pytest.approx(3.0, rel=0.05)
    calibrated = scaler.transform(p_test)
    assert metrics.ece(y_test, calibrated) < 0.02 < 0.1 < metrics.ece(y_test, p_test)
    assert metrics.auc(y_test, calibrated) == pytest.approx(metrics.auc(y_test, p_test))


def test_platt_scaling_recovers_slope_and_shift() -> None:
    y_val, p_val = _overconfident(20_000, seed=0)
    # also shift the base rate: the model's logit is 3 z + 1
    shifted = expit(np.log(p_val / (1 - p_val)) + 1.0)
    platt = PlattScaling().fit(shifted, y_val)
    # sigmoid(a (3 z + 1) + b) = sigmoid(z)  ->  a = 1/3, b = -1/3
    assert platt.a == pytest.approx(1 / 3, abs=0.02) and platt.b == pytest.approx(-1 / 3, abs=0.05)
    assert metrics.brier(y_val, platt.transform(shifted)) < metrics.brier(y_val, shifted)


def test_calibrators_must_be_fitted_first() -> None:
    with pytest.raises(RuntimeError, match="call fit"):
        TemperatureScaling().transform([0.5])
    with pytest.raises(RuntimeError, match="call fit"):
        PlattScaling().transform([0.5])


def test_reliability_plot_draws_the_diagonal_once_and_one_curve_per_model() -> None:
    y, p = _overconfident(500, seed=2)
    ax = metrics.plot_reliability(y, p, label="raw")
    metrics.plot_reliability(y, TemperatureScaling().fit(p, y).transform(p), ax=ax,
                             label="scaled", strategy="mass")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "perfect calibration" and len(labels) == 3
    assert labels[1] == f"raw (ECE {metrics.ece(y, p):.3f})"
    x, _ = ax.get_lines()[1].get_data()
    table = metrics.reliability(y, p)
    np.testing.assert_allclose(x, table.loc[table["count"] > 0, "confidence"])


def test_agreement_of_two_readings_by_hand() -> None:
    p = [0.9, 0.2, 0.6, 0.4]
    q = [0.7, 0.1, 0.4, 0.45]
    # ranks p: 4 1 3 2, ranks q: 4 1 2 3 -> d^2 = 0 + 0 + 1 + 1 = 2 -> 1 - 6 * 2 / (4 * 15) = 0.8
    # decisions at 0.5: p 1 0 1 0, q 1 0 0 0 -> 3 of 4 agree
    # |p - q| = 0.2, 0.1, 0.2, 0.05 -> mean 0.1375
    assert metrics.agreement(p, q) == pytest.approx(
        {"n": 4, "rank_correlation": 0.8, "same_decision": 0.75, "mean_abs_diff": 0.1375})


def test_agreement_averages_tied_ranks_and_refuses_missing_values() -> None:
    from scipy.stats import spearmanr

    hard, soft = [1.0, 0.0, 1.0, 0.0, 1.0], [0.8, 0.3, 0.4, 0.1, 0.55]
    expected = spearmanr(hard, soft).statistic  # ties of the 0/1 answers get their mean rank
    assert metrics.agreement(hard, soft)["rank_correlation"] == pytest.approx(expected)
    assert metrics.agreement(hard, soft, threshold=0.5)["same_decision"] == 0.8  # 0.4 says 0, hard 1
    assert np.isnan(metrics.agreement([0.7, 0.7, 0.7], [0.1, 0.5, 0.9])["rank_correlation"])
    with pytest.raises(MissingPredictionError, match="1 of 2 predictions are missing"):
        metrics.agreement([0.2, 0.4], [0.3, np.nan])
    with pytest.raises(ValueError, match="p has 2 rows but q has 3"):
        metrics.agreement([0.2, 0.4], [0.3, 0.1, 0.5])
