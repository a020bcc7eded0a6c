"""labkit.train.galore against the authors' package (galore-torch), and its state in a checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from labkit.train.galore import GaLoreAdamW


def weights(seed: int = 0) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    # tall, wide and square weights take the two sides of the projection; a bias stays plain AdamW
    return [nn.Parameter(torch.randn(shape, generator=generator)) for shape in [(12, 6), (5, 9), (7, 7), (7,)]]


def groups(params: list[nn.Parameter]) -> list[dict[str, object]]:
    return [{"params": params[:3], "rank": 2, "update_proj_gap": 3, "update_interval": 3, "scale": 0.25,
             "proj_type": "std"},
            {"params": params[3:]}]


def gradients(step: int, params: list[nn.Parameter]) -> None:
    generator = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)


def run(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], steps: range) -> None:
    for step in steps:
        gradients(step, params)
        optimizer.step()


def test_the_same_steps_as_the_authors_galore_adamw() -> None:
    galore_torch = pytest.importorskip("galore_torch")  # a dev dependency: CI has it
    ours, theirs = weights(), weights()
    run(GaLoreAdamW(groups(ours), lr=1e-2, eps=1e-6, weight_decay=0.1), ours, range(7))
    reference = galore_torch.GaLoreAdamW(groups(theirs), lr=1e-2, eps=1e-6, weight_decay=0.1,
                                         no_deprecation_warning=True)
    run(reference, theirs, range(7))
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    assert not torch.allclose(ours[0], weights()[0])  # it moved


def test_a_resumed_optimizer_takes_the_steps_of_an_uninterrupted_one() -> None:
    straight = weights()
    run(GaLoreAdamW(groups(straight), lr=1e-2), straight, range(8))

    resumed = weights()
    first = GaLoreAdamW(groups(resumed), lr=1e-2)
    run(first, resumed, range(4))  # the projection was renewed at steps 0 and 3, not yet at 6
    saved = first.state_dict()
    assert all(isinstance(v, torch.Tensor | int | float) for s in saved["state"].values() for v in s.values())
    second = GaLoreAdamW(groups(resumed), lr=1e-2)
    second.load_state_dict(saved)
    run(second, resumed, range(4, 8))
    for a, b in zip(straight, resumed, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
