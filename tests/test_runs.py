"""labkit.runs: a run folder refuses other settings by name, and writes are all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from labkit import runs


def test_a_folder_is_claimed_once_and_then_refuses_other_settings(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    runs.claim(folder, {"learning_rate": 0.001, "seed": 0, "mode": "token"})
    assert json.loads((folder / runs.RECORD).read_text())["learning_rate"] == 0.001
    runs.claim(folder, {"learning_rate": 0.001, "seed": 0, "mode": "token"})  # the same: accepted
    with pytest.raises(runs.RunMismatch) as refused:
        runs.claim(folder, {"learning_rate": 0.01, "seed": 0, "mode": "hard"})
    message = str(refused.value)
    assert str(folder) in message and "learning_rate: 0.001 -> 0.01" in message
    assert "mode: 'token' -> 'hard'" in message and "seed" not in message
    assert "delete it to start over" in message
    assert isinstance(refused.value, ValueError)


def test_a_field_that_appears_or_disappears_is_a_difference(tmp_path: Path) -> None:
    runs.claim(tmp_path / "a", {"seed": 0})
    with pytest.raises(runs.RunMismatch, match=r"epochs: None -> 2"):
        runs.claim(tmp_path / "a", {"seed": 0, "epochs": 2})


def test_settings_compare_as_they_read_back_from_json(tmp_path: Path) -> None:
    runs.claim(tmp_path, {"sizes": (1, 2), "out": Path("x")})
    runs.claim(tmp_path, {"sizes": (1, 2), "out": Path("x")})  # a tuple reads back as a list


def test_a_folder_with_files_but_no_record_is_refused(tmp_path: Path) -> None:
    (tmp_path / "iteration_1").mkdir()
    with pytest.raises(runs.RunMismatch, match="holds files but no run.json"):
        runs.claim(tmp_path, {"seed": 0})


def test_an_interrupted_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    runs.atomic_write_text(path, "old")

    def crash(tmp: Path) -> None:
        tmp.write_text("half a fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write(path, crash)
    assert path.read_text() == "old"
    runs.atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # the partial file was reused


def test_an_interrupted_folder_leaves_the_old_folder(tmp_path: Path) -> None:
    final = tmp_path / "checkpoint-2"
    with runs.atomic_folder(final) as tmp:
        (tmp / "weights").write_text("complete")
    with pytest.raises(KeyboardInterrupt), runs.atomic_folder(final) as tmp:
        (tmp / "weights").write_text("half")
        raise KeyboardInterrupt
    assert (final / "weights").read_text() == "complete"


def test_state_round_trips_and_loads_no_code(tmp_path: Path) -> None:
    state = {"step": 3, "weights": torch.arange(4.0), "history": [{"loss": 0.5}], "name": "x"}
    runs.save_state(tmp_path / "state.pt", state)
    back = runs.load_state(tmp_path / "state.pt")
    assert back["step"] == 3 and torch.equal(back["weights"], state["weights"])
    torch.save({"path": Path("somewhere")}, tmp_path / "foreign.pt")  # an object: pickled code
    with pytest.raises(Exception, match="[Ww]eights only"):
        runs.load_state(tmp_path / "foreign.pt")
