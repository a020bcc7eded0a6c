"""The device/dtype rule, the doctor and the command line."""

from __future__ import annotations

import pytest
import torch

from labkit import commands, hardware
from labkit.commands import doctor


def test_cpu_is_fp32_everywhere() -> None:
    assert hardware.compute_dtype("cpu") == torch.float32
    assert hardware.trainer_precision("cpu") == {"use_cpu": True, "bf16": False, "fp16": False}


@pytest.mark.parametrize(("bf16_ok", "dtype"), [(True, torch.bfloat16), (False, torch.float16)])
def test_gpu_rule(monkeypatch: pytest.MonkeyPatch, bf16_ok: bool, dtype: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    assert hardware.compute_dtype("cuda") == dtype
    precision = hardware.trainer_precision("cuda")
    assert precision == {"use_cpu": False, "bf16": bf16_ok, "fp16": not bf16_ok}


def test_offline_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hardware.is_offline()


def test_doctor_reports_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.main(["--no-network"]) == 0
    out = capsys.readouterr().out
    assert "compute dtype" in out and "float32" in out and "OK" in out
    rows = doctor.report(check_network=False)
    assert rows["device"] == str(hardware.device()) and rows["torch"].startswith("2.13.0")


def test_cli_dispatch(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["--help"]) == 0 and "labkit doctor" in capsys.readouterr().out
    assert commands.main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err
    assert commands.main(["doctor", "--no-network"]) == 0


def test_seeded_repeats_a_draw_and_leaves_the_callers_stream_and_threads_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    with hardware.seeded(7, threads=1):
        first = torch.rand(3)
        assert torch.get_num_threads() == 1
    with hardware.seeded(7):
        second = torch.rand(3)
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(3), expected_next)  # the stream outside went on untouched
    assert torch.get_num_threads() == threads
