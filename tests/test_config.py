"""labkit.config: configs document every field, check themselves, and make their command line."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
from pathlib import Path

import pytest

import labkit
from labkit import config
from labkit.commands import pretrain as pretrain_command
from labkit.commands import serval as serval_command
from labkit.noisy import DivideMixConfig
from labkit.pocket.corpus import CorpusConfig
from labkit.pocket.model import Shape
from labkit.pocket.pretrain import PretrainConfig
from labkit.serval import ServalConfig
from labkit.train import SFTConfig
from labkit.vertical.training import TrainConfig


def _config_classes() -> list[type]:
    """Every dataclass named *Config or *Arguments (mixins of a config) in labkit, and the model Shape,
    found by walking the package."""
    found: dict[str, type] = {}
    for info in pkgutil.walk_packages(labkit.__path__, "labkit."):
        if info.name.startswith("labkit.grading.bank") or info.name.endswith("__main__"):
            continue  # exercises, not configs; `python -m labkit` runs the command
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if dataclasses.is_dataclass(value) and isinstance(value, type) and value.__module__ == info.name \
                    and (name.endswith(("Config", "Arguments")) or name == "Shape"):
                found[f"{info.name}.{name}"] = value
    return [found[k] for k in sorted(found)]


def test_every_config_is_found() -> None:
    names = {c.__name__ for c in _config_classes()}
    assert {"SFTConfig", "ServalConfig", "PretrainConfig", "CorpusConfig", "TrainConfig",
            "DivideMixConfig", "Shape", "LoraArguments", "FreezeArguments", "GaloreArguments"} <= names


@pytest.mark.parametrize("config_type", _config_classes(), ids=lambda c: c.__name__)
def test_every_field_has_help_and_the_defaults_are_valid(config_type: type) -> None:
    undocumented = [f.name for f in dataclasses.fields(config_type) if not f.metadata.get("help")]
    assert not undocumented, f"{config_type.__name__}: fields without help {undocumented}"
    config_type()  # the defaults pass the config's own checks
    assert "__post_init__" in vars(config_type), f"{config_type.__name__} does not check itself"


@pytest.mark.parametrize(("make", "message"), [
    (lambda: SFTConfig(lora_rank=0), "SFTConfig.lora_rank=0: it must be at least 1"),
    (lambda: SFTConfig(finetuning_type="qlora"), "SFTConfig.finetuning_type='qlora': choose one of"),
    (lambda: SFTConfig(lr_scheduler_type="linear_warmup"), "lr_scheduler_type='linear_warmup'"),
    (lambda: SFTConfig(lr_scheduler_type="reduce_lr_on_plateau"), "lr_scheduler_type='reduce_lr_on_plateau'"),
    (lambda: SFTConfig(cutoff_len=1), "SFTConfig.cutoff_len=1: leave room for a prompt and an answer"),
    (lambda: SFTConfig(save_total_limit=-1), "SFTConfig.save_total_limit=-1: use 0 (keep all)"),
    (lambda: SFTConfig(lora_target=3), "SFTConfig.lora_target=3"),
    (lambda: SFTConfig(warmup_ratio=1.0), "SFTConfig.warmup_ratio=1.0: use a fraction in"),
    (lambda: SFTConfig(lora_target=" , "), "SFTConfig.lora_target=' , ': name the layers"),
    (lambda: ServalConfig(noisy_method="magic"), "ServalConfig.noisy_method='magic': choose one of"),
    (lambda: ServalConfig(mode="logits"), "ServalConfig.mode='logits'"),
    (lambda: ServalConfig(threshold=0.3), "ServalConfig.threshold=0.3"),
    (lambda: ServalConfig(vertical="svm"), "ServalConfig.vertical='svm'"),
    (lambda: PretrainConfig(min_lr=1.0), "PretrainConfig.min_lr=1.0"),
    (lambda: Shape(hidden_size=100, heads=6), "Shape.heads=6: it must divide hidden_size"),
    (lambda: TrainConfig(epochs=0), "TrainConfig.epochs=0"),
    (lambda: DivideMixConfig(p_clean=1.5), "DivideMixConfig.p_clean=1.5"),
    (lambda: CorpusConfig(records={"nope": 3}), "CorpusConfig.records="),
    (lambda: CorpusConfig(question_prompt_weight=-1.0), "CorpusConfig.question_prompt_weight=-1.0"),
])
def test_a_bad_value_is_refused_on_creation_naming_the_field(make, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_lora_target_reads_as_llamafactory_writes_it() -> None:
    assert SFTConfig(lora_target="all").target_modules == "all-linear"
    assert SFTConfig(lora_target="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]
    assert SFTConfig(lora_target=["q_proj", "v_proj"]).target_modules == ["q_proj", "v_proj"]  # type: ignore[arg-type]


def test_every_schedule_the_config_accepts_is_one_transformers_builds() -> None:
    import typing

    import torch
    from transformers import get_scheduler

    from labkit.train.sft import LrScheduler

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for name in typing.get_args(LrScheduler):
        SFTConfig(lr_scheduler_type=name, save_total_limit=0)
        get_scheduler(name, optimizer, num_warmup_steps=1, num_training_steps=10).step()


def test_settings_leave_out_bookkeeping_and_read_back_as_json() -> None:
    values = config.settings(SFTConfig(output_dir=Path("x"), progress=False, learning_rate=0.5))
    assert values["learning_rate"] == 0.5 and "output_dir" not in values and "progress" not in values
    assert "shape" in config.settings(PretrainConfig())  # a nested config as a plain dict
    assert config.settings(PretrainConfig())["shape"]["hidden_size"] == 192


def test_an_option_without_help_is_refused() -> None:
    with pytest.raises(ValueError, match="help"):
        config.option(3)


def _serval(argv: list[str]) -> ServalConfig:
    return serval_command.parse_args(argv)[1]


def test_no_flags_give_the_dataclass_defaults() -> None:
    assert _serval([]) == ServalConfig()
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, SFTConfig)
    assert config.from_arguments(SFTConfig, parser.parse_args([])) == SFTConfig()


def test_every_field_is_a_flag_of_its_type() -> None:
    settings = _serval(["--lora_rank", "4", "--noisy-method", "confident", "--no-choose_epoch",
                        "--vertical_options", '{"epochs": 3}', "--threshold", "0.8", "--hard-labels",
                        "--max_train_rows", "None", "--learning_rate", "5e-4"])
    assert (settings.lora_rank, settings.noisy_method, settings.choose_epoch) == (4, "confident", False)
    assert settings.vertical_options == {"epochs": 3} and settings.threshold == 0.8
    assert settings.hard_labels is True and settings.max_train_rows is None
    assert settings.learning_rate == 5e-4


def test_a_flag_outside_its_choices_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _serval(["--noisy_method", "magic"])
    assert "invalid choice: 'magic'" in capsys.readouterr().err


def test_a_yaml_file_sets_values_and_flags_override_it(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("lora_rank: 4\nseed: 3\nnoisy_method: confident\n")
    settings = _serval(["--config", str(path), "--seed", "5"])
    assert (settings.lora_rank, settings.seed, settings.noisy_method) == (4, 5, "confident")


def test_a_yaml_file_with_an_unknown_setting_names_it(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("lora_r: 4\n")
    with pytest.raises(SystemExit, match=r"run\.yaml: unknown setting\(s\) \['lora_r'\]"):
        _serval(["--config", str(path)])
    path.write_text("- 1\n- 2\n")
    with pytest.raises(SystemExit, match="expected a mapping"):
        _serval(["--config", str(path)])


def test_a_preset_is_a_flag_and_a_yaml_file_that_names_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("fast: true\nseed: 2\n")
    with pytest.raises(SystemExit, match=r"\['fast'\] are command-line presets, not settings; pass --fast"):
        _serval(["--config", str(path)])


def test_a_preset_sets_values_that_explicit_flags_still_override() -> None:
    fast = _serval(["--fast"])
    assert fast.max_train_rows == serval_command.FAST["max_train_rows"]
    assert fast.num_train_epochs == 1
    assert _serval(["--fast", "--num_train_epochs", "3"]).num_train_epochs == 3
    assert _serval(["--fast", "--ablation", "one_iteration"]).iterations == 1


def test_a_tabular_teacher_on_the_text_task_is_refused_before_any_run_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    monkeypatch.setattr(serval_command, "run", lambda task, *args: started.append(task))
    with pytest.raises(ValueError, match=r"vertical='ft_transformer'.*cannot learn abstracts.*text_minilm"):
        serval_command.main(["--tasks", "pima", "abstracts", "--ablation", "ft_transformer_teacher",
                             "--out", str(tmp_path)])
    assert started == []  # not even the table that comes first


def test_pretrain_flags_come_from_its_config(tmp_path: Path) -> None:
    settings = pretrain_command.parse_args(["--seed", "2", "--no-leak_check", "--out", str(tmp_path)])
    assert settings == PretrainConfig(seed=2, leak_check=False, out=tmp_path)
