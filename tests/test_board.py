"""The LabBoard's buttons drive the kit's own functions: clicks train the weights code trains, the
exported `labkit train` command trains them again, Stop keeps a checkpoint that Resume finishes.
The same board in a real browser: tests/test_board_browser.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from labkit.board import LabBoard, examples_from, field_widget, loss_curve_svg
from labkit.commands import train as train_command
from labkit.pocket.explanations import preference_pairs
from labkit.train import SFTConfig, train_sft
from labkit.train.checkpoint import WEIGHTS, trainable_state
from labkit.train.sft import load_for_sft

pytestmark = pytest.mark.slow


def small_board(tmp_path: Path, max_steps: int = 3) -> LabBoard:
    board = LabBoard(output_dir=tmp_path / "board")
    board.examples.value = 12
    board.fields["max_steps"].value = str(max_steps)
    board.fields["per_device_train_batch_size"].value = "4"
    board.fields["lora_rank"].value = "4"
    board.fields["learning_rate"].value = "0.001"
    return board


def test_clicks_train_the_weights_that_code_and_the_exported_command_train(tmp_path: Path) -> None:
    board = small_board(tmp_path)
    board.train_button.click()
    board.join()
    assert board.result.steps == 3 and board.loss_curve.value.count('class="loss-point"') == 3
    clicked = {k: v.clone() for k, v in trainable_state(board.trained).items()}

    config = SFTConfig(max_steps=3, per_device_train_batch_size=4, lora_rank=4, learning_rate=1e-3,
                       progress=False)
    model, tokenizer = load_for_sft("pocket", config)
    examples = [(p.prompt, p.chosen) for p in preference_pairs("pima", 12, seed=config.seed)]
    coded = trainable_state(train_sft(model, tokenizer, examples, config).model)
    assert clicked.keys() == coded.keys() and all(torch.equal(clicked[k], coded[k]) for k in coded)

    board.export_button.click()
    assert "llamafactory-cli train" in board.exported.value and "labkit train" in board.exported.value
    export = tmp_path / "board" / "export"
    argv = ["--config", str(export / "kit_sft.yaml"), "--data", str(export / "kit_sft.jsonl"),
            "--model", "pocket", "--out", str(tmp_path / "cli")]
    assert train_command.main(argv) == 0
    commanded = load_file(str(tmp_path / "cli" / "checkpoint-3" / WEIGHTS))
    assert all(torch.equal(clicked[k], commanded[k]) for k in coded)
    # a changed setting changes the weights: the comparison above can fail
    board.fields["seed"].value = "7"
    board.train_button.click()
    board.join()
    other = trainable_state(board.trained)
    assert not all(torch.equal(clicked[k], other[k]) for k in coded)
    assert board.run_dir == tmp_path / "board" / "run-2"  # a fresh folder per run


def test_stop_keeps_a_checkpoint_and_resume_finishes_the_run(tmp_path: Path) -> None:
    board = small_board(tmp_path, max_steps=40)
    board.train_button.click()
    deadline = time.monotonic() + 120
    while board.progress.value < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    board.stop_button.click()
    board.join()
    stopped = board.result
    assert stopped.stopped and 1 <= stopped.steps < 40 and stopped.checkpoint.is_dir()
    assert not board.resume_button.disabled and "stopped" in board.status.value
    board.resume_button.click()
    board.join()
    assert board.result.resumed_from == stopped.steps and board.result.steps == 40
    assert board.result.checkpoint.parent == stopped.checkpoint.parent  # the same run folder
    assert board.resume_button.disabled


def test_evaluate_runs_in_the_background_one_job_at_a_time(tmp_path: Path) -> None:
    board = small_board(tmp_path)
    board.evaluate_button.click()
    board.train_button.click()  # while the evaluation runs: refused, and said
    assert "busy" in board.status.value and board.run_dir is None
    board.join()
    table = board.evaluation.value
    assert "<table" in table and "multiple_choice" in table and ">base<" in table and "trained" not in table
    assert not board.evaluate_button.disabled


def test_bad_settings_are_shown_on_the_board_not_lost(tmp_path: Path) -> None:
    board = small_board(tmp_path)
    board.fields["learning_rate"].value = "-1"
    board.train_button.click()
    assert "SFTConfig.learning_rate=-1.0" in board.status.value
    board.fields["learning_rate"].value = "fast"
    board.train_button.click()
    assert "fast" in board.status.value  # the parser's own complaint
    board.data.value = str(tmp_path / "missing.jsonl")
    board.fields["learning_rate"].value = "0.001"
    board.export_button.click()
    assert "missing.jsonl" in board.exported.value


def test_chat_keeps_the_conversation_and_answers() -> None:
    board = LabBoard()
    board.message.value = "Hello"
    board.send_button.click()
    assert board.transcript.value.count('class="chat-user"') == 1
    assert board.transcript.value.count('class="chat-assistant"') == 1 and board.message.value == ""
    assert len(board._messages) == 2 and board._messages[1]["content"]


def test_widgets_are_made_from_the_config_fields() -> None:
    assert field_widget(SFTConfig, "finetuning_type").options == (("lora", "lora"), ("freeze", "freeze"),
                                                                   ("full", "full"), ("None", None))
    assert field_widget(SFTConfig, "max_steps").value == "None"
    assert field_widget(SFTConfig, "quantization_bit").options == (("None", None), ("8", 8), ("4", 4))
    assert "rank" in field_widget(SFTConfig, "lora_rank").tooltip
    board = LabBoard(config=SFTConfig(lora_rank=16, max_steps=5))
    assert board.config().lora_rank == 16 and board.config().max_steps == 5
    board.fields["max_steps"].value = "None"
    assert board.config().max_steps is None


def test_the_loss_curve_draws_one_point_per_step() -> None:
    svg = loss_curve_svg([(1, 2.0), (2, 1.5), (3, 1.0)])
    assert svg.count('class="loss-point"') == 3 and "2.000" in svg and "1.000" in svg
    assert "loss-point" not in loss_curve_svg([])


def test_built_in_data_are_lesson_09s_sft_pairs(tmp_path: Path) -> None:
    pairs = examples_from("explanations:pima", 5, seed=3)
    assert pairs == [{"prompt": p.prompt, "answer": p.chosen} for p in preference_pairs("pima", 5, seed=3)]
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "a", "answer": "b", "weight": 2.0}\n', encoding="utf-8")
    assert examples_from(str(rows), 5, seed=3) == [{"prompt": "a", "answer": "b", "weight": 2.0}]  # kept
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        examples_from(str(tmp_path / "nothing.jsonl"), 5, seed=3)


def test_the_train_command_names_a_missing_data_file(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert train_command.main(["--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "none.jsonl: no such data file" in capsys.readouterr().err
