"""labkit.experiments: repeated runs, summaries, the LLM's labels per split, resumable comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labkit import experiments
from labkit.data import load
from labkit.experiments import (
    HARD_LABELS,
    SUPERVISED,
    ZERO_SHOT,
    annotate_rows,
    compare_noisy_methods,
    rule_answers,
    split_of,
    summarize,
    supervised_runs,
    with_percent_of_supervised,
)


def test_summarize_mean_and_sample_std_per_group() -> None:
    runs = pd.DataFrame({"dataset": ["a", "a", "a", "b"], "method": ["m"] * 4,
                         "auc": [0.6, 0.8, 0.7, 0.9], "accuracy": [0.5, 0.7, 0.6, 0.8]})
    table = summarize(runs, ["dataset", "method"])
    a, b = table.iloc[0], table.iloc[1]
    assert a["auc_mean"] == pytest.approx(0.7) and a["auc_std"] == pytest.approx(0.1)
    assert a["accuracy_mean"] == pytest.approx(0.6) and a["n"] == 3
    assert np.isnan(b["auc_std"]) and b["n"] == 1  # one seed has no spread, not a spread of 0
    assert "failed" not in table

    runs.loc[1, ["auc", "accuracy"]] = np.nan  # a method that refused the labels on one seed
    table = summarize(runs, ["dataset", "method"])
    assert table["auc_mean"].iloc[0] == pytest.approx(0.65) and table["failed"].tolist() == [1, 0]


def test_percent_of_supervised_per_dataset() -> None:
    summary = pd.DataFrame({"dataset": ["a", "a", "b", "b"],
                            "method": [SUPERVISED, "x", SUPERVISED, "x"],
                            "auc_mean": [0.8, 0.76, 0.5, 0.6]})
    pct = with_percent_of_supervised(summary)["pct_of_supervised"].tolist()
    assert pct == pytest.approx([100.0, 95.0, 100.0, 120.0])
    with pytest.raises(ValueError, match="no 'supervised' row for \\['b'\\]"):
        with_percent_of_supervised(summary.iloc[[0, 1, 3]])


def test_split_of_picks_the_rows_of_each_seeds_split() -> None:
    ds = load("pima", seed=3)
    per_row = ds.frame["label"].to_numpy()
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(split_of(per_row, ds, split), ds.labels(split))
    with pytest.raises(ValueError, match="one value per row"):
        split_of(per_row[:-1], ds, "test")


def test_supervised_runs_repeat_exactly_and_vary_with_the_seed() -> None:
    first = supervised_runs("pima", "mlp", seeds=(0, 1), epochs=5, progress=False)
    again = supervised_runs("pima", "mlp", seeds=(0, 1), epochs=5, progress=False)
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), again.drop(columns="seconds"))
    assert first["auc"].iloc[0] != first["auc"].iloc[1]  # another split, another model
    assert (first["auc"] > 0.7).all()


class _ScriptedAnnotator:
    """Answers P(yes) = the gold label, except for two rows it cannot read (NaN)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.texts: list[str] = []

    def annotate(self, texts: list[str], task: object) -> pd.DataFrame:
        self.texts = list(texts)
        values = self.labels.astype(float)
        values[:2] = np.nan
        return pd.DataFrame({"value": values})


def test_annotate_rows_asks_about_every_row_and_counts_missing_answers() -> None:
    ds = load("hcv")
    annotator = _ScriptedAnnotator(ds.frame["label"].to_numpy())
    with pytest.warns(UserWarning, match="hcv: 2 of 608 answers missing"):
        values = annotate_rows("hcv", annotator)  # type: ignore[arg-type]
    assert len(annotator.texts) == len(ds.frame) == len(values)
    assert values[:2].tolist() == [0.5, 0.5]
    assert "label" not in annotator.texts[0].lower().split(":")[0]


def test_methods_learn_from_the_llm_labels_not_the_gold_ones() -> None:
    gold = load("pima").frame["label"].to_numpy().astype(float)
    options = {"model_name": "logistic", "seeds": (0,), "progress": False}
    right = compare_noisy_methods("pima", gold, (ZERO_SHOT, HARD_LABELS, SUPERVISED), **options)
    wrong = compare_noisy_methods("pima", 1 - gold, (ZERO_SHOT, HARD_LABELS, "early_stop"),
                                  **options)
    auc = dict(zip(right["method"], right["auc"], strict=True))
    assert auc[ZERO_SHOT] == 1.0 and auc[HARD_LABELS] > 0.75 and auc[SUPERVISED] > 0.75
    # An annotator that always says the opposite teaches the opposite.
    assert (wrong["auc"] < 0.3).all()


def test_compare_resumes_from_its_results_file(tmp_path, monkeypatch) -> None:
    llm = np.random.default_rng(0).random(len(load("heart").frame))
    path = tmp_path / "runs.jsonl"
    options = {"model_name": "logistic", "seeds": (0, 1), "results": path, "progress": False}
    first = compare_noisy_methods("heart", llm, (ZERO_SHOT, HARD_LABELS), **options)
    assert len(path.read_text().splitlines()) == 4

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was computed again")

    monkeypatch.setattr(experiments, "one_run", must_not_run)
    again = compare_noisy_methods("heart", llm, (ZERO_SHOT, HARD_LABELS), **options)
    pd.testing.assert_frame_equal(first, again)

    # Other answers are another configuration: computed, not taken from the file.
    monkeypatch.undo()
    other = compare_noisy_methods("heart", 1 - llm, (ZERO_SHOT,), **options)
    assert other["auc"].tolist() == pytest.approx([1 - a for a in first["auc"][::2]])
    assert len(path.read_text().splitlines()) == 6

    path.write_text(path.read_text() + json.dumps({"dataset": "heart"}) + "\n")
    with pytest.raises(ValueError, match="runs.jsonl, line 7: not a result row"):
        compare_noisy_methods("heart", llm, (ZERO_SHOT,), **options)


def test_a_method_that_refuses_the_labels_is_reported_not_dropped(tmp_path: Path) -> None:
    always_yes = np.full(len(load("pima").frame), 0.7)  # no answer leans to "no"
    options = {"seeds": (0,), "model_name": "logistic", "progress": False,
               "results": tmp_path / "runs.jsonl"}
    with pytest.warns(UserWarning, match=r"pima, early_stop, seed 0: fit_noisy\('early_stop'\): "
                                         r"noisy_targets: all 460 targets are 0.7"):
        runs = compare_noisy_methods("pima", always_yes, (ZERO_SHOT, "early_stop"), **options)
    refused = runs.set_index("method").loc["early_stop"]
    assert np.isnan(refused["auc"]) and "class 0: 0 rows, class 1: 460" in refused["error"]
    assert summarize(runs, ["method"])["failed"].tolist() == [0, 1]
    # the finished run is reused, the refused one is tried again (the method may have changed)
    with pytest.warns(UserWarning, match="pima, early_stop, seed 0"):
        compare_noisy_methods("pima", always_yes, (ZERO_SHOT, "early_stop"), **options)
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 3


def test_the_textbook_rule_annotates_every_row_of_a_table_and_ranks_it() -> None:
    from labkit.metrics import auc

    ds = load("heart")
    answers = rule_answers("heart")
    assert answers.shape == (len(ds.frame),) and ((answers > 0) & (answers < 1)).all()
    assert auc(ds.frame["label"].to_numpy(), answers) > 0.8  # a textbook rule, not a coin
    with pytest.raises(ValueError, match="abstracts: the textbook rules cover tables only"):
        rule_answers("abstracts")


def test_hard_labels_cut_a_shy_annotator_at_its_prevalence_instead_of_one_class(tmp_path) -> None:
    """Every answer below 0.5: rounding would train on one class (test AUC 0.23 on HCV)."""
    shy = 0.45 * rule_answers("heart")
    runs = compare_noisy_methods("heart", shy, (HARD_LABELS,), seeds=(0,), model_name="logistic",
                                 progress=False)
    assert runs["auc"].iloc[0] > 0.8, runs


def test_a_refused_model_is_reported_with_the_auc_it_would_have_scored(monkeypatch) -> None:
    """fit_noisy refuses a model that ranks the rows against its annotator; the report keeps the
    test AUC the refused model would have scored, to show what the refusal prevented."""
    from labkit.noisy import RankingDisagreement
    from labkit.vertical import make_model

    ds = load("heart", seed=0)
    backwards = make_model("logistic", ds.schema, seed=0).fit(ds.features("train"),
                                                              1 - ds.labels("train"))

    def refuse(*args, **kwargs):
        raise RankingDisagreement("fit_noisy('naive'): ranks against its annotator", backwards)

    monkeypatch.setattr(experiments, "fit_noisy", refuse)
    with pytest.warns(UserWarning, match="heart, naive, seed 0: fit_noisy"):
        runs = compare_noisy_methods("heart", rule_answers("heart"), ("naive",), seeds=(0,),
                                     model_name="logistic", progress=False)
    row = runs.iloc[0]
    assert np.isnan(row["auc"]) and "ranks against" in row["error"]
    expected = experiments.scores(ds.labels("test"), backwards.predict_proba(ds.features("test")))["auc"]
    assert row["refused_auc"] == pytest.approx(expected) and row["refused_auc"] < 0.2


def test_a_weakened_annotator_reads_the_same_numbers_under_other_names() -> None:
    from labkit.data import to_text
    from labkit.experiments import with_shuffled_names

    ilpd = load("ilpd", seed=1)
    weak = with_shuffled_names(ilpd)
    assert weak.schema.name == "ilpd_shuffled" and weak.schema.feature_names == ilpd.schema.feature_names
    pd.testing.assert_frame_equal(weak.features("test"), ilpd.features("test"))
    np.testing.assert_array_equal(weak.labels("val"), ilpd.labels("val"))
    numeric = [f.name for f in ilpd.schema.features if f.kind == "numeric"]
    moved = [n for n in numeric if weak.schema.feature(n).label != ilpd.schema.feature(n).label]
    assert len(moved) >= 2
    assert sorted(weak.schema.feature(n).label for n in numeric) == sorted(
        ilpd.schema.feature(n).label for n in numeric)  # a permutation of the names
    row = ilpd.features("train").iloc[0].to_dict()
    assert to_text(row, weak.schema) != to_text(row, ilpd.schema)
    with pytest.raises(ValueError, match="nothing to shuffle"):
        with_shuffled_names(load("early_diabetes"))
