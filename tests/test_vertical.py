"""labkit.vertical: schema-driven preprocessing and the one fit / predict_proba interface."""

from __future__ import annotations

import typing
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from labkit.data import load
from labkit.data.schema import Feature, Schema, Task
from labkit.vertical import (
    TABULAR_MODELS,
    FTTransformerModel,
    LogisticModel,
    MLPModel,
    Preprocessor,
    TextClassifier,
    make_model,
)
from labkit.vertical import text as text_module
from labkit.vertical.training import batches

FAST = dict(epochs=40, progress=False)
SMALL = {  # small, quick configurations of every tabular model
    "ft_transformer": dict(n_blocks=1, d_block=32, lr=1e-3, **FAST),
    "mlp": dict(d_block=32, **FAST),
    "logistic": {},
    "boosting": dict(max_iter=40),
}


def toy_schema() -> Schema:
    features = (
        Feature("age", "Age", unit="years"),
        Feature("glucose", "Glucose", unit="mg/dL", zero_is_missing=True),
        Feature("sex", "Sex", "binary", codes={"F": "female", "M": "male"}),
        Feature("pain", "Chest pain", "categorical",
                codes={"ATA": "atypical", "NAP": "non-anginal", "ASY": "none"}),
    )
    task = Task(target="y", positive=("1",), negative=("0",), positive_name="sick",
                negative_name="healthy", statement="this patient is sick", why="toy")
    return Schema(name="toy", title="Toy", file="toy.csv", kind="tabular", features=features,
                  task=task, n_rows=0, n_columns=5, class_counts={}, source="synthetic",
                  license="CC0", citation="none")


def toy_data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A learnable problem that needs every kind of feature (and survives missing values)."""
    rng = np.random.default_rng(seed)
    age = rng.normal(55, 10, n)
    glucose = rng.normal(110, 25, n)
    sex = rng.choice(["F", "M"], n)
    pain = rng.choice(["ATA", "NAP", "ASY"], n)
    logit = (0.08 * (age - 55) + 0.05 * (glucose - 110) + 1.2 * (sex == "M")
             + 2.0 * (pain == "ASY") - 1.6)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * logit))).astype(int)
    frame = pd.DataFrame({"age": age, "glucose": glucose, "sex": sex, "pain": pain})
    frame.loc[rng.random(n) < 0.1, "glucose"] = 0.0  # "not measured", as in Pima
    frame.loc[rng.random(n) < 0.05, "age"] = np.nan
    frame["pain"] = frame["pain"].astype(object)
    frame.loc[rng.random(n) < 0.05, "pain"] = None
    return frame, y


@pytest.fixture(scope="module")
def toy() -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    return {"train": toy_data(400, 0), "val": toy_data(150, 1), "test": toy_data(400, 2)}


# ----- preprocessing -----
def test_preprocessing_follows_the_schema_and_the_training_split() -> None:
    schema = toy_schema()
    train = pd.DataFrame({"age": [40.0, 50.0, np.nan, 70.0], "glucose": [0.0, 100.0, 120.0, 140.0],
                          "sex": ["F", "M", "M", None], "pain": ["ATA", "NAP", "ASY", "ASY"]})
    pre = Preprocessor(schema, scaling="standard").fit(train)
    # medians from training values only; a 0 glucose counts as missing, not as a value
    assert pre.medians == {"age": 50.0, "glucose": 120.0}
    assert pre.indicators == ["age", "glucose"]
    assert pre.flat_names() == ["age", "glucose", "age_missing", "glucose_missing", "sex=M",
                                "sex_missing", "pain=ATA", "pain=NAP", "pain=ASY"]
    test = pd.DataFrame({"age": [np.nan], "glucose": [0.0], "sex": ["M"], "pain": ["NAP"]})
    row = pre.flat(test)[0]
    scaled_median = pre.flat(pd.DataFrame({"age": [50.0], "glucose": [120.0], "sex": ["M"],
                                           "pain": ["NAP"]}))[0]
    np.testing.assert_allclose(row[:2], scaled_median[:2])  # imputed = the training median
    np.testing.assert_array_equal(row[2:], [1, 1, 1, 0, 0, 1, 0])
    # the FT-Transformer's codes: 0 = missing, levels in the schema's code order
    np.testing.assert_array_equal(pre.codes(train), [[1, 1], [2, 2], [2, 3], [0, 3]])
    assert pre.cardinalities == [3, 4]


def test_transform_of_a_row_does_not_depend_on_other_rows(toy) -> None:
    X, _ = toy["train"]
    pre = Preprocessor(toy_schema()).fit(X)
    test, _ = toy["test"]
    alone = pre.flat(test.iloc[:1])
    among_others = pre.flat(test)[:1]
    np.testing.assert_array_equal(alone, among_others)


def test_preprocessing_rejects_bad_input(toy) -> None:
    X, y = toy["train"]
    schema = toy_schema()
    with pytest.raises(ValueError, match=r"\['label'\].*ds.features"):
        Preprocessor(schema).fit(X.assign(label=y))  # the answer must not sneak in
    with pytest.raises(ValueError, match=r"\['pain'\] missing"):
        Preprocessor(schema).fit(X.drop(columns="pain"))
    with pytest.raises(ValueError, match="'age' is numeric.*'old'"):
        Preprocessor(schema).fit(X.assign(age=["old"] * len(X)))
    pre = Preprocessor(schema).fit(X)
    with pytest.warns(UserWarning, match="'pain'.*XYZ.*not seen in training"):
        codes = pre.codes(X.assign(pain=["XYZ"] * len(X)))
    assert (codes[:, 1] == 0).all()
    with pytest.raises(RuntimeError, match="not fitted"):
        Preprocessor(schema).flat(X)


# ----- the models -----
@pytest.mark.parametrize("name", TABULAR_MODELS)
def test_every_tabular_model_learns_the_toy_problem(name: str, toy) -> None:
    (X, y), (X_val, y_val), (X_test, y_test) = toy["train"], toy["val"], toy["test"]
    model = make_model(name, toy_schema(), seed=0, **SMALL[name])
    model.fit(X, y, validation=(X_val, y_val))
    p = model.predict_proba(X_test)
    assert p.shape == (len(X_test),) and ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(y_test, p) > 0.85, name
    assert model.info, f"{name} should record what its fit did"


@pytest.mark.parametrize("name", TABULAR_MODELS)
def test_soft_targets_are_learned_as_probabilities(name: str, toy) -> None:
    """Trained on the soft target 0.3 for every row, a model predicts about 0.3 (not 0 or 1)."""
    X, _ = toy["train"]
    options = SMALL[name] | ({"epochs": 80} if "epochs" in SMALL[name] else {})
    model = make_model(name, toy_schema(), seed=0, **options).fit(X, np.full(len(X), 0.3))
    assert abs(model.predict_proba(X).mean() - 0.3) < 0.05, name


def test_soft_targets_equal_weighted_hard_rows_for_logistic_regression(toy) -> None:
    """scikit-learn takes hard labels only: each row enters once per class, weighted by p."""
    X, y = toy["train"]
    p = 0.15 + 0.7 * y
    soft = LogisticModel(toy_schema()).fit(X, p)
    inputs = soft.preprocessor.flat(X)
    hard = LogisticRegression(max_iter=5000).fit(
        np.r_[inputs, inputs], np.r_[np.ones(len(X)), np.zeros(len(X))],
        sample_weight=np.r_[p, 1 - p])
    np.testing.assert_allclose(soft.predict_proba(X), hard.predict_proba(inputs)[:, 1], atol=1e-4)


def test_zero_sample_weight_removes_a_row(toy) -> None:
    X, y = toy["train"]
    corrupted = y.copy()
    corrupted[:150] = 1 - corrupted[:150]
    weight = np.r_[np.zeros(150), np.ones(len(X) - 150)]

    def auc(model: LogisticModel) -> float:
        return roc_auc_score(y, model.predict_proba(X))

    weighted = auc(LogisticModel(toy_schema()).fit(X, corrupted, sample_weight=weight))
    clean_rows_only = auc(LogisticModel(toy_schema()).fit(X.iloc[150:], y[150:]))
    unweighted = auc(LogisticModel(toy_schema()).fit(X, corrupted))
    assert weighted == pytest.approx(clean_rows_only, abs=0.01)
    assert weighted > unweighted + 0.02


@pytest.mark.parametrize("cls", [MLPModel, FTTransformerModel])
def test_torch_models_are_deterministic_per_seed(cls, toy) -> None:
    X, y = toy["train"]
    options = dict(epochs=5, progress=False) | ({"d_block": 32, "n_blocks": 1}
                                                if cls is FTTransformerModel else {})
    first = cls(toy_schema(), seed=3, **options).fit(X, y).predict_proba(X)
    again = cls(toy_schema(), seed=3, **options).fit(X, y).predict_proba(X)
    other = cls(toy_schema(), seed=4, **options).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_validation_stops_training_and_keeps_the_best_epoch(toy) -> None:
    (X, y), (X_val, y_val) = toy["train"], toy["val"]
    model = MLPModel(toy_schema(), seed=0, epochs=300, patience=10, progress=False)
    model.fit(X, y, validation=(X_val, y_val))
    assert model.info["epochs_run"] == model.info["best_epoch"] + 10 < 300
    losses = [h["val"] for h in model.history]
    assert model.info["best_val"] == pytest.approx(min(losses))


def test_bad_targets_and_unfitted_models_give_clear_errors(toy) -> None:
    X, y = toy["train"]
    model = MLPModel(toy_schema(), **FAST)
    with pytest.raises(ValueError, match="outside"):
        model.fit(X, y * 2.0)
    with pytest.raises(ValueError, match="3 values for 400 rows"):
        model.fit(X, y[:3])
    with pytest.raises(ValueError, match="probs\\[:, 1\\]"):
        model.fit(X, np.c_[1 - y, y])
    with pytest.raises(RuntimeError, match="not fitted"):
        MLPModel(toy_schema()).predict_proba(X)
    with pytest.raises(ValueError, match="one class only"):
        LogisticModel(toy_schema()).fit(X, np.ones(len(X)))
    with pytest.raises(KeyError, match="unknown model"):
        make_model("svm")
    with pytest.raises(ValueError, match="text dataset; use text_minilm"):
        make_model("mlp", load("abstracts").schema)


def test_models_run_on_a_shipped_dataset() -> None:
    """The real loader's frame (codes as strings, NaN for missing) goes straight in."""
    ds = load("heart", seed=0)
    val = (ds.features("val"), ds.labels("val"))
    for name in ("logistic", "mlp"):
        model = make_model(name, ds.schema, seed=0, **SMALL[name])
        model.fit(ds.features("train"), ds.labels("train"), validation=val)
        auc = roc_auc_score(ds.labels("test"), model.predict_proba(ds.features("test")))
        assert auc > 0.85, (name, auc)


@pytest.mark.parametrize("n", [1, 64, 65, 129, 130])
def test_batches_cover_every_row_once_without_single_row_batches(n: int) -> None:
    parts = batches(n, 64, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(parts).tolist()) == list(range(n))
    assert n == 1 or min(len(p) for p in parts) > 1


# ----- text -----
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_text_classifier_learns_and_caches_embeddings(tmp_path, monkeypatch) -> None:
    ds = load("abstracts", seed=0)
    train, test = ds.split("train").iloc[:120], ds.split("test").iloc[:80]
    short = {"text": lambda f: f["text"].str.slice(0, 300)}  # the opening is enough; faster
    X, X_test = train[["text"]].assign(**short), test[["text"]].assign(**short)
    model = TextClassifier(ds.schema, cache_dir=tmp_path, seed=0, epochs=60, progress=False)
    model.fit(X, train["label"].to_numpy())
    auc = roc_auc_score(test["label"], model.predict_proba(X_test))
    assert auc > 0.85, auc
    assert (tmp_path / text_module.CACHE_FILE).is_file()
    # a new process would read the file: empty the memory, forbid the encoder, predict again
    text_module._MEMORY.clear()
    text_module._READ.clear()

    def no_encoder() -> None:
        raise AssertionError("the cache should have served these texts")

    monkeypatch.setattr(text_module, "load_encoder", no_encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = model.predict_proba(X_test)
    np.testing.assert_allclose(again, model.predict_proba(X_test))
    assert roc_auc_score(test["label"], again) == pytest.approx(auc)
    with pytest.raises(ValueError, match="without text"):
        model.predict_proba(X_test.assign(text=[""] * len(X_test)))


def test_one_factory_with_one_documented_default_per_purpose() -> None:
    from labkit.vertical import DEFAULT_MODELS, MODELS, ModelName, default_model, model_factory

    pima, abstracts = load("pima").schema, load("abstracts").schema
    assert default_model(pima, "experiments") == "mlp" and default_model(pima, "serval") == "logistic"
    assert default_model(abstracts, "serval") == default_model(abstracts, "experiments") == "text_minilm"
    assert set(MODELS) == set(typing.get_args(ModelName))
    assert {kind for purpose in DEFAULT_MODELS.values() for kind in purpose} == {"tabular", "text"}
    with pytest.raises(ValueError, match="purpose='lessons'"):
        default_model(pima, "lessons")  # type: ignore[arg-type]
    quiet = model_factory(None, pima, purpose="experiments", epochs=3)(7)
    assert isinstance(quiet, MLPModel) and not quiet.config.progress and quiet.config.epochs == 3
    assert quiet.seed == 7
    # torch training options: a TypeError for a scikit-learn model, unless a comparison skips them
    with pytest.raises(TypeError, match="epochs"):
        model_factory("logistic", pima, purpose="experiments", epochs=3)(0)
    logistic = model_factory("logistic", pima, purpose="experiments", skip_torch_options=True, epochs=3,
                             patience=5)(0)
    assert isinstance(logistic, LogisticModel)
    assert make_model("mlp", pima, seed=1).config.progress  # not quiet unless asked
