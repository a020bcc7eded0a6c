"""labkit.noisy: noise injection, selection, losses, and methods that recover from noisy labels.

The method tests use a problem with a known truth: 500 training rows, labels corrupted on purpose,
a test set with clean labels. A flexible network trained to convergence on the noisy labels (the
naive baseline) memorizes the flips and loses accuracy; every method must win back a clear part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from labkit.noisy import (
    NOISY_METHODS,
    DivideMixConfig,
    RankingDisagreement,
    clean_probability,
    estimate_transition,
    fit_noisy,
    flip_soft_labels,
    forward_corrected_bce,
    inject_noise,
    memorization_curve,
    noise_rate,
    prior_penalty,
    select_confident,
    sharpen,
    sides,
    simulate_soft_labels,
    soft_bce,
    stopping_set,
)
from labkit.vertical import FTTransformerModel, LogisticModel, MLPModel

MARGIN = 0.05  # accuracy points a method must win back over the naive model


def make_problem(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Two classes split by a bent boundary in 3 of 6 features (an MLP needs its hidden layer)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    f = X[:, 0] + X[:, 1] + 0.7 * X[:, 2] ** 2 - 0.7
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]), (f > 0).astype(int)


def factory(seed: int) -> MLPModel:
    # Wide, no dropout, 150 epochs: enough capacity and time to memorize every flipped label.
    return MLPModel(seed=seed, d_block=64, dropout=0.0, epochs=150, progress=False)


@pytest.fixture(scope="module")
def problem() -> dict[str, object]:
    X, y = make_problem(500, 100)
    X_val, y_val = make_problem(200, 200)
    X_test, y_test = make_problem(2000, 2)
    return {"X": X, "y": y, "X_val": X_val, "y_val": y_val, "X_test": X_test, "y_test": y_test,
            "hard": inject_noise(y, 0.35, seed=0), "hard_val": inject_noise(y_val, 0.35, seed=50),
            "soft": simulate_soft_labels(y, 0.35, seed=0),
            "soft_val": simulate_soft_labels(y_val, 0.35, seed=50)}


def accuracy(model, problem) -> float:
    return float(np.mean(model.predict(problem["X_test"]) == problem["y_test"]))


@pytest.fixture(scope="module")
def naive_accuracy(problem) -> dict[str, float]:
    return {kind: accuracy(fit_noisy("naive", factory, problem["X"], problem[kind], seed=0),
                           problem) for kind in ("hard", "soft")}


# ----- noise -----
def test_symmetric_noise_flips_the_requested_share_deterministically() -> None:
    y = np.random.default_rng(0).integers(0, 2, 20000)
    noisy = inject_noise(y, 0.3, seed=1)
    assert abs(np.mean(noisy != y) - 0.3) < 0.01
    np.testing.assert_array_equal(noisy, inject_noise(y, 0.3, seed=1))
    assert not np.array_equal(noisy, inject_noise(y, 0.3, seed=2))


def test_asymmetric_noise_flips_only_the_source_class() -> None:
    y = np.random.default_rng(0).integers(0, 2, 20000)
    noisy = inject_noise(y, 0.4, "asymmetric", source=1, seed=0)
    assert (noisy[y == 0] == 0).all()
    assert abs(np.mean(noisy[y == 1] == 0) - 0.4) < 0.015


def test_instance_noise_depends_on_the_features() -> None:
    X, y = make_problem(5000, 0)
    flips = {kind: inject_noise(y, 0.3, kind, X=X, seed=0) != y for kind in ("symmetric", "instance")}
    assert abs(flips["instance"].mean() - 0.3) < 0.02

    def predictability(flipped: np.ndarray) -> float:
        """How well the features predict which rows were flipped (0.5: not at all)."""
        features = np.c_[X, y[:, None] * X]
        fitted = LogisticRegression(max_iter=2000).fit(features, flipped)
        return roc_auc_score(flipped, fitted.predict_proba(features)[:, 1])

    assert predictability(flips["instance"]) > 0.6
    assert predictability(flips["symmetric"]) < 0.56
    with pytest.raises(ValueError, match="pass X="):
        inject_noise(y, 0.3, "instance")


def test_simulated_soft_labels_are_less_sure_when_wrong() -> None:
    y = np.random.default_rng(0).integers(0, 2, 20000)
    p = simulate_soft_labels(y, 0.3, seed=0)
    wrong = (p >= 0.5) != y
    assert abs(wrong.mean() - 0.3) < 0.01
    sureness = np.maximum(p, 1 - p)
    assert sureness[wrong].mean() < sureness[~wrong].mean() - 0.05
    assert ((p >= 0) & (p <= 1)).all()


# ----- selection -----
def test_confident_selection_thresholds_and_balances() -> None:
    p = np.array([0.99, 0.97, 0.95, 0.92, 0.6, 0.4, 0.05, 0.08, 0.5])
    sel = select_confident(p, 0.9, min_per_class=1)
    assert sel.available == {0: 2, 1: 4}
    assert sel.counts == {0: 2, 1: 2} and not sel.fallback
    np.testing.assert_array_equal(sel.indices, [0, 1, 6, 7])  # the most confident of each class
    assert select_confident(p, 0.9, balance="none", min_per_class=1).counts == {0: 2, 1: 4}
    fallback = select_confident(p, 0.9, min_per_class=3)
    assert fallback.fallback and fallback.counts == {0: 3, 1: 3}
    assert 5 in fallback.indices  # 0.4: the next most confident negative, below the threshold
    with pytest.raises(ValueError, match="no row leans to class 0.*tell the rows apart"):
        select_confident(np.full(5, 0.95))


def test_a_shy_annotator_falls_back_to_its_ranking() -> None:
    """Every P(Yes) below 0.5 (a rare class), yet well ranked: the highest stand for class 1."""
    p = np.array([0.02, 0.45, 0.01, 0.30, 0.03, 0.40, 0.04, 0.05])
    sel = select_confident(p, 0.9, min_per_class=2)
    assert sel.fallback and sel.counts == {0: 2, 1: 2}
    np.testing.assert_array_equal(sel.indices, [0, 1, 2, 5])
    np.testing.assert_array_equal(sel.labels, [0, 1, 0, 1])
    np.testing.assert_array_equal(sel.targets(p), [0.02, 1.0, 0.01, 1.0])
    assert any("ranked closest" in note for note in sel.notes)


def test_prior_balance_keeps_the_estimated_prevalence() -> None:
    p = np.r_[np.full(30, 0.95), np.full(70, 0.02)]
    sel = select_confident(p, 0.9, balance="prior")
    assert sel.counts == {0: 70, 1: 30}


def test_stopping_set_uses_confident_rows_and_never_overlaps_training(problem) -> None:
    soft = problem["soft"]
    held = stopping_set(problem["X"], soft, None, seed=0)
    assert held.source == "train"
    assert held.rows is not None and np.intersect1d(held.train_rows, held.rows).size == 0
    assert len(held.train_rows) + len(held.rows) == len(soft)
    np.testing.assert_array_equal(held.targets, soft[held.rows])
    assert (np.maximum(held.targets, 1 - held.targets) >= 0.9).all()
    val = stopping_set(problem["X"], soft, (problem["X_val"], problem["soft_val"]), seed=0)
    assert val.source == "validation" and len(val.train_rows) == len(soft)
    assert abs((val.targets >= 0.5).mean() - 0.5) < 0.01  # class-balanced


# ----- losses -----
def test_sharpen_and_prior_penalty() -> None:
    p = torch.tensor([0.7, 0.5, 0.2])
    np.testing.assert_allclose(sharpen(p, 0.5), [0.49 / 0.58, 0.5, 0.04 / 0.68], rtol=1e-5)
    assert float(prior_penalty(torch.tensor([0.2, 0.4]), 0.3)) == pytest.approx(0, abs=1e-7)
    assert float(prior_penalty(torch.tensor([0.9, 0.9]), 0.3)) > 0.5


def test_forward_correction_matches_its_formula() -> None:
    logits, targets = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([1.0, 0.0, 0.7])
    identity = forward_corrected_bce(np.eye(2))
    torch.testing.assert_close(identity(logits, targets), soft_bce(logits, targets), atol=1e-5,
                               rtol=1e-5)
    T = np.array([[0.8, 0.2], [0.3, 0.7]])
    p = torch.sigmoid(logits)
    q = 0.2 * (1 - p) + 0.7 * p
    expected = -(targets * q.log() + (1 - targets) * (1 - q).log())
    torch.testing.assert_close(forward_corrected_bce(T)(logits, targets), expected)
    with pytest.raises(ValueError, match="row-stochastic"):
        forward_corrected_bce(np.array([[0.8, 0.3], [0.3, 0.7]]))


def test_transition_is_recovered_from_anchor_rows() -> None:
    clean = np.linspace(0, 1, 1001)  # P(true positive | x), with sure rows at both ends
    noisy = 0.25 + (0.8 - 0.25) * clean  # P(noisy positive | x) under T01 = 0.25, T11 = 0.8
    T = estimate_transition(noisy, quantile=1.0)
    np.testing.assert_allclose(T, [[0.75, 0.25], [0.2, 0.8]], atol=1e-9)
    assert noise_rate(T, np.full(10, 0.25 + 0.55 * 0.5)) == pytest.approx(0.225)
    with pytest.raises(ValueError, match="uninformative"):
        estimate_transition(np.full(100, 0.5))


def test_gaussian_mixture_separates_small_from_large_losses() -> None:
    rng = np.random.default_rng(0)
    loss = np.r_[rng.normal(0.1, 0.03, 300), rng.normal(1.5, 0.3, 100)]
    clean = clean_probability(loss, seed=0)
    assert (clean[:300] > 0.9).mean() > 0.98 and (clean[300:] < 0.1).mean() > 0.98


# ----- memorization -----
def test_memorization_curve_shows_clean_patterns_learned_first(problem) -> None:
    curve = memorization_curve(factory(0), problem["X"], problem["hard"], problem["y"],
                               test=(problem["X_test"], problem["y_test"]))
    assert len(curve) == 150
    early, late = curve.iloc[:20], curve.iloc[-10:]
    # early on, the network overrules most flipped labels: it has learned the pattern only
    assert early["corrected"].max() > 0.75 and early["memorized"].min() < 0.25
    # later it reproduces the flips, and accuracy on clean test labels falls
    assert late["memorized"].mean() > early["memorized"].min() + 0.35
    assert late["fit_clean"].mean() > 0.95
    assert curve["test_accuracy"].max() > late["test_accuracy"].mean() + 0.1


# ----- the methods -----
def test_every_named_method_is_registered() -> None:
    from labkit.noisy.methods import _METHODS

    assert list(_METHODS) == list(NOISY_METHODS)


@pytest.mark.parametrize("method", [m for m in NOISY_METHODS if m != "naive"])
def test_method_recovers_accuracy_lost_to_hard_noisy_labels(method, problem, naive_accuracy):
    model = fit_noisy(method, factory, problem["X"], problem["hard"],
                      validation=(problem["X_val"], problem["hard_val"]), seed=0)
    assert accuracy(model, problem) > naive_accuracy["hard"] + MARGIN, model.info


@pytest.mark.parametrize("method", [m for m in NOISY_METHODS if m != "naive"])
def test_method_recovers_accuracy_lost_to_soft_noisy_labels(method, problem, naive_accuracy):
    """Annotator-like probabilities (as an LLM gives), 35% of them on the wrong side."""
    model = fit_noisy(method, factory, problem["X"], problem["soft"],
                      validation=(problem["X_val"], problem["soft_val"]), seed=0)
    assert accuracy(model, problem) > naive_accuracy["soft"] + MARGIN, model.info


def test_early_stopping_without_a_validation_set_holds_out_confident_rows(problem,
                                                                         naive_accuracy):
    model = fit_noisy("early_stop", factory, problem["X"], problem["soft"], seed=0)
    assert model.info["stop_source"] == "train"
    assert accuracy(model, problem) > naive_accuracy["soft"] + MARGIN, model.info


def test_naive_model_does_lose_accuracy_to_noise(problem, naive_accuracy) -> None:
    clean = MLPModel(seed=0, progress=False).fit(problem["X"], problem["y"],
                                                 validation=(problem["X_val"], problem["y_val"]))
    assert accuracy(clean, problem) > naive_accuracy["hard"] + 0.15


def test_divide_mix_is_deterministic_and_mixes_ft_transformer_tokens(problem) -> None:
    def small_ft(seed: int) -> FTTransformerModel:
        # 20 warm-up epochs at most: with 4 the model learned too little to pass fit_noisy's check
        return FTTransformerModel(seed=seed, n_blocks=1, d_block=16, epochs=20, progress=False)

    config = DivideMixConfig(epochs=2)
    X, soft = problem["X"].iloc[:200], problem["soft"][:200]
    first = fit_noisy("divide_mix", small_ft, X, soft, seed=1, config=config)
    again = fit_noisy("divide_mix", small_ft, X, soft, seed=1, config=config)
    p = first.predict_proba(problem["X_test"])
    np.testing.assert_array_equal(p, again.predict_proba(problem["X_test"]))
    assert len(first.networks) == 2 and ((p > 0) & (p < 1)).all()
    assert len(first.info["clean_share"]) == first.info["epochs_run"] == 2


def test_methods_that_only_call_fit_work_with_scikit_learn_models(problem) -> None:
    def logistic(seed: int) -> LogisticModel:
        return LogisticModel(seed=seed)

    model = fit_noisy("cleanlab", logistic, problem["X"], problem["hard"], seed=0)
    assert model.info["method"] == "cleanlab" and model.info["removed"] > 50
    with pytest.raises(TypeError, match="needs a torch model"):
        fit_noisy("divide_mix", logistic, problem["X"], problem["hard"], seed=0)
    with pytest.raises(KeyError, match="unknown method"):
        fit_noisy("magic", logistic, problem["X"], problem["hard"])
    with pytest.raises(ValueError, match="noisy_targets"):
        fit_noisy("naive", logistic, problem["X"], problem["hard"][:10])



def test_random_flips_of_soft_labels_turn_p_into_1_minus_p_on_the_rows_inject_noise_flips() -> None:
    p = np.random.default_rng(0).random(2000)
    flipped = flip_soft_labels(p, 0.3, seed=4)
    rows = inject_noise(np.zeros(2000, dtype=int), 0.3, seed=4) == 1
    np.testing.assert_allclose(flipped[rows], 1 - p[rows])
    np.testing.assert_array_equal(flipped[~rows], p[~rows])
    assert abs(rows.mean() - 0.3) < 0.03

# ----- annotators that lean to one side, or say nothing -----
@pytest.fixture(scope="module")
def shy() -> dict[str, object]:
    """A shy annotator on a rare class, like the pocket LLM on HCV: 18% positives, every P(yes)
    below 0.5 (mean 0.05), yet the rows well ranked (AUC 0.99 against the truth)."""
    def rare(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, 6))
        f = X[:, 0] + X[:, 1] + 0.7 * X[:, 2] ** 2 - 2.2
        p = 0.45 / (1 + np.exp(-2 * (f + 0.3 * rng.normal(size=n)) + 2))
        return pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]), (f > 0).astype(int), p

    (X, _, t), (X_val, _, t_val), (X_test, y_test, _) = rare(500, 100), rare(200, 200), rare(2000, 2)
    return {"X": X, "targets": t, "validation": (X_val, t_val), "X_test": X_test, "y_test": y_test}


def test_sides_rounds_or_cuts_at_the_estimated_prevalence() -> None:
    np.testing.assert_array_equal(sides(np.array([0.2, 0.7, 0.5, 0.1])), [0, 1, 1, 0])
    shy = np.array([0.30, 0.02, 0.30, 0.45, 0.01, 0.03, 0.04, 0.05, 0.02, 0.08])
    # none rounds to 1; the mean, 0.13, says round(10 * 0.13) = 1 row is class 1: the largest
    np.testing.assert_array_equal(sides(shy), [0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    # three rows tie at the cut (mean 0.16 -> 2 rows are class 1): row order decides
    tied = np.array([0.40, 0.40, 0.40, 0.0, 0.0, 0.0, 0.2, 0.2, 0.0, 0.0])
    np.testing.assert_array_equal(sides(tied), [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    confident_yes = np.array([0.9, 0.6, 0.8, 0.55])  # all on the upper side: the lowest is class 0
    np.testing.assert_array_equal(sides(confident_yes), [1, 1, 1, 0])
    with pytest.raises(ValueError, match=r"all 4 targets are 0 \(class 0: 4 rows, class 1: 0\)"):
        sides(np.zeros(4))


@pytest.mark.parametrize("method", NOISY_METHODS)
def test_every_method_learns_the_ranking_of_a_shy_annotator(method, shy) -> None:
    """Rounding these targets gives one class; a method that splits rows by rounded class drops
    the rows the annotator suspects most and can learn the ranking backwards (co-teaching scored
    a test AUC of 0.19 on HCV that way; forward correction 0.34 here, when its out-of-fold
    estimate stopped at once)."""
    model = fit_noisy(method, factory, shy["X"], shy["targets"], validation=shy["validation"],
                      seed=0)
    auc = roc_auc_score(shy["y_test"], model.predict_proba(shy["X_test"]))
    assert auc > 0.65, (auc, model.info)
    assert model.info["classes"].startswith("every target on one side of 0.5"), model.info
    assert model.info["annotator_agreement"]["spearman"] > 0.3


@pytest.mark.parametrize("method", NOISY_METHODS)
@pytest.mark.parametrize("constant", [0.0, 0.2])
def test_every_method_refuses_targets_without_a_ranking(method, constant, problem) -> None:
    targets = np.full(len(problem["y"]), constant)
    with pytest.raises(ValueError, match=rf"fit_noisy\('{method}'\).*all 500 targets are "
                                         rf"{constant:g}.*class 1: 0.*Fix: ask the annotator"):
        fit_noisy(method, factory, problem["X"], targets, seed=0)


class BackwardsLogistic(LogisticModel):
    """A model that learns, then ranks every row the wrong way round."""

    def predict_proba(self, X):
        return 1 - super().predict_proba(X)


def test_a_model_that_ranks_against_its_annotator_is_refused_and_kept(problem) -> None:
    with pytest.raises(RankingDisagreement, match=r"fit_noisy\('naive'\).*200 validation rows.*"
                                              r"Spearman -0\.\d+") as refused:
        fit_noisy("naive", lambda seed: BackwardsLogistic(seed=seed), problem["X"], problem["soft"],
                  validation=(problem["X_val"], problem["soft_val"]), seed=0)
    assert refused.value.model.info["annotator_agreement"]["spearman"] < -0.2
    # the same check passes the model that ranks the right way round, and records its agreement
    model = fit_noisy("naive", lambda seed: LogisticModel(seed=seed), problem["X"], problem["soft"],
                      seed=0)
    assert model.info["annotator_agreement"]["rows"] == "training"
    assert model.info["annotator_agreement"]["spearman"] > 0.3


def test_the_accuracy_stop_ranks_a_shy_annotators_rows() -> None:
    """All targets below 0.5: the error rate of 0/1 predictions cannot tell two models apart, the
    AUC against the targets' sides still can (an early stop needs that signal)."""
    from labkit.vertical.base import validation_score

    targets = np.array([0.02, 0.40, 0.01, 0.30, 0.03, 0.35])
    right, wrong = targets * 0.9, 0.5 - targets
    assert validation_score(right, targets, "accuracy") < validation_score(wrong, targets, "accuracy")
    assert validation_score(right, targets, "auc") == 0.0
