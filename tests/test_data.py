"""The shipped datasets: checksums, documented figures, missing-value rules, errors, splits, text."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import labkit.data as d
from labkit.data import DataError, load, parse, to_text
from labkit.paths import DATASETS_DIR as DATA_DIR

# Documented figures (data/datasets/SOURCES.md and the official descriptions):
# file rows, file columns, label counts after the documented binarization.
DOCUMENTED = {
    "pima": (768, 9, {0: 500, 1: 268}),
    "heart": (918, 12, {0: 410, 1: 508}),
    "early_diabetes": (520, 17, {0: 200, 1: 320}),
    "ilpd": (583, 11, {0: 167, 1: 416}),
    "hcv": (615, 14, {0: 533, 1: 24 + 21 + 30}),  # 7 suspect donors left out
    "cleveland": (303, 14, {0: 164, 1: 55 + 36 + 35 + 13}),
    "heart_failure": (299, 13, {0: 203, 1: 96}),
    "thyroid": (215, 6, {0: 150, 1: 35 + 30}),
    "breast_cancer": (569, 31, {0: 357, 1: 212}),
    "cirrhosis": (418, 20, {0: 232 + 25, 1: 161}),
    "abstracts": (2888, 2, {0: 299 + 385 + 610 + 961, 1: 633}),
}


def test_every_dataset_is_documented_and_shipped() -> None:
    assert set(DOCUMENTED) == set(d.DATASETS)
    assert set(d.SERVAL_TASKS) <= set(d.DATASETS)


def _checksums() -> dict[str, str]:
    text = (DATA_DIR / "SHA256SUMS").read_text()
    return {name: digest for digest, name in (line.split() for line in text.splitlines())}


@pytest.mark.parametrize("name", sorted(_checksums()))
def test_checksum(name: str) -> None:
    digest = hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest()
    assert digest == _checksums()[name], f"data/datasets/{name} differs from its published checksum"


def test_every_schema_file_has_a_checksum() -> None:
    assert {s.file for s in d.SCHEMAS.values()} <= set(_checksums())


def test_text_corpus_keeps_its_license() -> None:
    license_text = (DATA_DIR / "text" / "medical_tc_LICENSE.txt").read_text()
    assert "Attribution-ShareAlike 3.0" in license_text or "CC BY-SA" in license_text


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_figures(name: str) -> None:
    rows, columns, counts = DOCUMENTED[name]
    raw = pd.read_csv(DATA_DIR / d.SCHEMAS[name].file)
    assert raw.shape == (rows, columns)
    ds = load(name)
    assert ds.frame["label"].value_counts().to_dict() == counts
    assert d.SCHEMAS[name].class_counts == counts
    assert (d.SCHEMAS[name].n_rows, d.SCHEMAS[name].n_columns) == (rows, columns)


def test_pima_zeros_mean_missing() -> None:
    frame = load("pima").frame
    # zero counts of the raw file (Smith et al. 1988 data, as widely reported)
    assert frame[["Glucose", "BloodPressure", "SkinThickness", "Insulin", "BMI"]].isna().sum().to_dict() == {
        "Glucose": 5, "BloodPressure": 35, "SkinThickness": 227, "Insulin": 374, "BMI": 11}
    assert frame["Pregnancies"].isna().sum() == 0  # zero pregnancies is a real value
    assert (frame["Pregnancies"] == 0).sum() == 111


def test_na_strings_and_codes() -> None:
    hcv = load("hcv").frame
    assert hcv["ALP"].isna().sum() == 18 and "id" not in hcv.columns
    cleveland = load("cleveland").frame
    assert cleveland[["ca", "thal"]].isna().sum().to_dict() == {"ca": 4, "thal": 2}
    assert set(cleveland["thal"].dropna()) == {"3", "6", "7"}
    assert set(load("cirrhosis").frame["edema"]) == {"0", "0.5", "1"}
    assert load("heart_failure").frame.columns.tolist()[-2:] == ["DEATH_EVENT", "label"]


def test_schema_prints_features_and_task() -> None:
    text = str(load("pima").schema)
    assert "Glucose" in text and "mg/dL" in text and "0 = missing" in text and "Outcome" in text


# --- bad files: the error names the file, the column and the line ---------------------------

def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pima.csv"
    path.write_text(text)
    return path


HEADER = "Pregnancies,Glucose,BloodPressure,SkinThickness,Insulin,BMI,DiabetesPedigreeFunction,Age,Outcome"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found.*pima"):
        parse(d.SCHEMAS["pima"], tmp_path / "nope.csv")


def test_misnamed_column(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER.replace("Glucose", "Glucos") + "\n1,2,3,4,5,6,0.5,30,1\n")
    with pytest.raises(DataError, match=r"pima\.csv: column\(s\) \['Glucose'\] missing.*'Glucos'"):
        parse(d.SCHEMAS["pima"], path)


def test_missing_column(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER.replace(",Age", "") + "\n1,2,3,4,5,6,0.5,1\n")
    with pytest.raises(DataError, match=r"\['Age'\] missing"):
        parse(d.SCHEMAS["pima"], path)


def test_unparsable_value_names_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "\n1,2,3,4,5,6,0.5,30,1\n1,high,3,4,5,6,0.5,30,0\n")
    with pytest.raises(DataError, match=r"pima\.csv, line 3, column 'Glucose': 'high' is not a number"):
        parse(d.SCHEMAS["pima"], path)


def test_unknown_target_and_code(tmp_path: Path) -> None:
    path = _write(tmp_path, HEADER + "\n1,2,3,4,5,6,0.5,30,yes\n")
    with pytest.raises(DataError, match=r"line 2, column 'Outcome'.*'yes'"):
        parse(d.SCHEMAS["pima"], path)
    heart = (DATA_DIR / d.SCHEMAS["heart"].file).read_text().replace(",ATA,", ",XYZ,", 1)
    path = tmp_path / "heart.csv"
    path.write_text(heart)
    with pytest.raises(DataError, match=r"line 2, column 'ChestPainType': 'XYZ' is not a known code"):
        parse(d.SCHEMAS["heart"], path)


def test_not_a_csv(tmp_path: Path) -> None:
    path = tmp_path / "pima.csv"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match="pima.csv"):
        parse(d.SCHEMAS["pima"], path)


# --- splits --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", d.SERVAL_TASKS + ("abstracts",))
def test_splits_are_disjoint_stratified_and_seeded(name: str) -> None:
    ds = load(name, seed=3)
    parts = {s: set(ds._index[s]) for s in d.SPLITS}
    assert sum(map(len, parts.values())) == len(ds)
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    rate = ds.frame["label"].mean()
    for s in d.SPLITS:
        assert abs(ds.labels(s).mean() - rate) < 0.03
        assert "label" not in ds.features(s).columns
    again = load(name, seed=3)
    assert ds.split("test").equals(again.split("test"))
    assert not ds.split("test").equals(load(name, seed=4).split("test"))
    assert len(ds.split("train")) == pytest.approx(0.6 * len(ds), abs=1)


def test_load_rejects_unknown_names() -> None:
    with pytest.raises(KeyError, match="unknown dataset 'pim'"):
        load("pim")
    with pytest.raises(ValueError, match="unknown split"):
        load("pima").split("dev")


# --- records as text -------------------------------------------------------------------------

def test_to_text_list_and_prose() -> None:
    schema = d.SCHEMAS["pima"]
    record = {"Pregnancies": 6.0, "Glucose": 148.0, "BloodPressure": 72.0, "SkinThickness": np.nan,
              "Insulin": np.nan, "BMI": 33.6, "DiabetesPedigreeFunction": 0.627, "Age": 50.0}
    listed = to_text(record, schema, style="list")
    assert listed.splitlines()[1] == "Plasma glucose 2 h after an oral glucose load: 148 mg/dL"
    assert "Triceps" not in listed and "insulin" not in listed.lower()  # missing: left out
    assert "Body mass index: 33.6 kg/m2" in listed and "Diabetes pedigree function: 0.627" in listed
    prose = to_text(record, schema, style="prose")
    assert prose.startswith("A 50-year-old patient.")
    assert "The body mass index is 33.6 kg/m2." in prose and "\n" not in prose
    with pytest.raises(ValueError, match="unknown style"):
        to_text(record, schema, style="json")  # type: ignore[arg-type]


def test_to_text_codes_every_dataset() -> None:
    for name in d.DATASETS:
        ds = load(name)
        for style in d.STYLES:
            for _, record in ds.features("val").head(20).iterrows():
                text = to_text(record, ds.schema, style=style)
                assert text and "nan" not in text.lower().split()
                assert not re.search(r"\de[+-]\d", text)  # no scientific notation
    heart = d.SCHEMAS["heart"]
    record = {f: np.nan for f in heart.feature_names} | {"Sex": "F", "Age": 49.0, "ExerciseAngina": "Y"}
    prose = "A 49-year-old female patient. Present: exercise-induced angina."
    assert to_text(record, heart, "prose") == prose
    assert to_text(record, heart, "list") == "Age: 49 years\nSex: female\nExercise-induced angina: yes"


@pytest.mark.parametrize(("value", "code"), [
    ("1", "1"), ("1.0", "1"), (1, "1"), (1.0, "1"), (True, "1"), ("0.50", "0.5"), (0.5, "0.5"),
    ("1e3", "1000"), (" M ", "M"), ("Yes", "Yes"), ("", ""), ("inf", "inf"),
    (None, None), (float("nan"), None),
])
def test_a_category_code_has_one_spelling_wherever_it_comes_from(value: object, code: str | None) -> None:
    """A CSV cell, a frame value and a knowledge rule's `equals` all meet through canonical_code."""
    assert d.canonical_code(value) == code


def test_a_knowledge_rule_matches_a_code_however_it_is_spelled() -> None:
    from labkit.pocket.knowledge import Rule

    rule = Rule(feature="Sex", weight=1.5, text="", source="", equals=d.canonical_code("1.0"))
    assert [rule.contribution(v) for v in ("1", 1, 1.0, "1.0", "0", None)] == [1.5] * 4 + [0.0, 0.0]
