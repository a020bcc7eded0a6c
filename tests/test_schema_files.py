"""Datasets described by files: the shipped schemas, a teacher's dataset, and `labkit data check`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import labkit.data as d
from labkit.commands import main as labkit
from labkit.data.loading import check
from labkit.data.schema_file import SchemaError, read_schema
from labkit.paths import DATASETS_DIR

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "breast_cytology"


@pytest.mark.parametrize("name", d.DATASETS)
def test_every_shipped_file_has_the_rows_columns_and_classes_its_schema_expects(name: str) -> None:
    schema = d.SCHEMAS[name]
    frame = check(schema, DATASETS_DIR / schema.file)
    assert frame["label"].value_counts().to_dict() == schema.class_counts


def test_a_teachers_dataset_folder_loads_like_a_shipped_one(tmp_path: Path) -> None:
    folder = tmp_path / "cytology"
    shutil.copytree(EXAMPLE, folder)
    ds = d.load(folder, seed=1)
    assert ds.schema.name == "breast_cytology" and len(ds) == 699
    assert ds.frame["bare_nuclei"].isna().sum() == 16  # the file's '?'
    assert [len(ds.labels(s)) for s in d.SPLITS] == [419, 140, 140]
    assert d.load(str(folder / "breast_cytology.yaml"), seed=1).frame.equals(ds.frame)
    assert "Uniformity of cell size" in d.to_text(ds.features("train").iloc[0], ds.schema)


def _edited(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path / "cytology"
    shutil.copytree(EXAMPLE, folder)
    path = folder / "breast_cytology.yaml"
    schema = yaml.safe_load(path.read_text())
    edit(schema)
    path.write_text(yaml.safe_dump(schema, sort_keys=False))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.update(colour="red"), r"the top level: unknown key\(s\) \['colour'\]"),
    (lambda s: s.pop("citation"), r"the top level: missing key\(s\) \['citation'\]"),
    (lambda s: s["task"].pop("target"), r"field 'task': missing key\(s\) \['target'\]"),
    (lambda s: s["features"][2].update(kind="numerc"), r"field 'features\[2\].kind': 'numerc' is not one of"),
    (lambda s: s["features"][0].update(kind="binary"), r"field 'features\[0\].codes': a binary feature needs"),
    (lambda s: s["features"][1].update(units="mm"), r"field 'features\[1\]': unknown key\(s\) \['units'\]"),
    (lambda s: s.update(features={}), r"field 'features': should be a list"),
    (lambda s: s.update(class_counts={"benign": 458}), r"field 'class_counts': should give the rows of label 0"),
    (lambda s: s["task"].update(positive=[""]), r"field 'task.positive': .*not empty"),
])
def test_a_mistake_in_a_schema_file_names_the_file_and_the_field(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _edited(tmp_path, edit)
    with pytest.raises(SchemaError, match=r"breast_cytology\.yaml: " + message):
        read_schema(path)


def test_codes_written_as_numbers_are_the_csv_codes(tmp_path: Path) -> None:
    path = _edited(tmp_path, lambda s: s["task"].update(positive=[4], negative=[2.0]))
    assert read_schema(path).task.positive == ("4",) and read_schema(path).task.negative == ("2",)


def test_labkit_data_check_passes_a_good_dataset_and_names_what_differs_in_a_bad_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert labkit(["data", "check", str(EXAMPLE), "pima"]) == 0
    out = capsys.readouterr().out
    assert "breast_cytology: ok" in out and "missing values: bare_nuclei 16" in out and "pima: ok" in out
    path = _edited(tmp_path, lambda s: s.update(class_counts={0: 458, 1: 240}))
    assert labkit(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "class_counts: the schema says {0: 458, 1: 240}, the file has {0: 458, 1: 241}" in out
    csv = path.parent / "breast_cytology.csv"
    csv.write_text(csv.read_text().replace("\n5,4,4,5,7,10,3,2,1,2\n", "\n5,4,4,5,seven,10,3,2,1,2\n", 1))
    assert labkit(["data", "check", str(path.parent)]) == 1
    assert "line 3, column 'single_epithelial_cell_size': 'seven' is not a number" in capsys.readouterr().out


def test_an_unknown_name_says_how_to_give_a_dataset_by_path() -> None:
    with pytest.raises(KeyError, match="path of a dataset's schema file or folder"):
        d.load("breast_cytology")


def test_labkit_serval_takes_a_dataset_folder_and_refuses_a_name_it_does_not_know(
        capsys: pytest.CaptureFixture[str]) -> None:
    from labkit.commands import serval as serval_command

    args, _ = serval_command.parse_args(["--tasks", "pima", str(EXAMPLE)])
    assert args.tasks == ["pima", str(EXAMPLE)]
    with pytest.raises(SystemExit):
        serval_command.parse_args(["--tasks", "breast_cytology"])
    assert "neither shipped tasks" in capsys.readouterr().err
