"""Checkpoints that let an interrupted run end with the same weights as an uninterrupted one.

A checkpoint folder `checkpoint-<step>` holds the trainable weights (safetensors) and a
`trainer_state.pt` with the optimizer, the scheduler, the grad scaler, the random state, the step
(which fixes the data position: batches are a function of seed and epoch) and the log so far.
A checkpoint is written under a temporary name and renamed when complete (labkit.runs), so a run
killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from labkit import runs

WEIGHTS = "trainable.safetensors"
STATE = "trainer_state.pt"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (for LoRA: the adapter weights only)."""
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    """The torch random state (CPU and every GPU): dropout draws from it."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(output_dir: Path, step: int, model: nn.Module, state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint-<step> (weights + `state`) atomically; keep only the newest `keep` checkpoints."""
    final = output_dir / f"checkpoint-{step}"
    with runs.atomic_folder(final) as tmp:
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
    for old in checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


def load(path: Path, model: nn.Module) -> dict[str, Any]:
    """Copy the checkpoint's weights into `model`'s trainable parameters; return the trainer state."""
    weights = load_file(str(path / WEIGHTS))
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != trainable:
        missing, extra = sorted(trainable - set(weights)), sorted(set(weights) - trainable)
        raise ValueError(f"{path / WEIGHTS} does not fit this model's trainable parameters "
                         f"(missing {missing[:3]}, unexpected {extra[:3]}): resume with the same model and "
                         "adapter settings, or start over in a new output_dir.")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    # Our own file: optimizer, scheduler and RNG states are tensors and plain Python values.
    return runs.load_state(path / STATE)
