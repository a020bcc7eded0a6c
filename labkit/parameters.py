"""Counting a model's parameters, 4-bit weights included: one rule for every summary of the kit.

bitsandbytes stores a 4-bit weight packed two values per byte in a uint8 tensor of another shape;
its `quant_state` keeps the shape of the weight it stands for. A parameter counts as that
(logical) size: quantizing a model changes its bytes, not its number of parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def logical_numel(param: torch.Tensor) -> int:
    """The number of weights a parameter stands for (a packed 4-bit weight: its unpacked size)."""
    quant_state = getattr(param, "quant_state", None)
    shape = getattr(quant_state, "shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else param.numel()


@dataclass(frozen=True)
class ParameterCount:
    total: int
    trainable: int


def count_parameters(model: nn.Module) -> ParameterCount:
    """All and trainable parameters of `model`, each at its logical size (see the module docstring)."""
    total = trainable = 0
    for param in model.parameters():
        count = logical_numel(param)
        total += count
        trainable += count if param.requires_grad else 0
    return ParameterCount(total, trainable)
