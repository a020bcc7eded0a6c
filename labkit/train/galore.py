"""GaLore: full-parameter training whose optimizer state lives in a low-rank subspace of the gradient.

Zhao et al. 2024, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection",
https://arxiv.org/abs/2403.03507. For a weight W (m x n, m >= n) with gradient G, every
`update_interval` steps take the top-r right singular vectors of G as P (r x n), then

    R = G P^T                      (m x r)   the gradient in the subspace
    M, V = Adam moments of R       (m x r each, instead of m x n)
    W <- W - lr * scale * (M_hat / (sqrt(V_hat) + eps)) P

(for m < n the left singular vectors project from the other side). The weights and their gradient
stay full size; Adam's two moments shrink from 2mn to 2mr numbers, plus P (rn). Every weight
trains, unlike LoRA, whose update stays rank r forever; GaLore's subspace moves as P is renewed.

The arithmetic follows the authors' package (`galore-torch`, its GaLoreAdamW with proj_type
"std"): tests/test_galore.py checks that both take the same steps. LlamaFactory switches it on with
`use_galore: true` (GaloreArguments below, same names).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from labkit.config import option, require


@dataclass
class GaloreArguments:
    """GaLore, under LlamaFactory's names (hparams/finetuning_args.py GaloreArguments)."""

    use_galore: bool = option(False, "GaLore: Adam's state in a low-rank projection of each target "
                              "weight's gradient (with finetuning_type 'full' or 'freeze')")
    galore_target: str = option(
        "all", "weights GaLore projects: 'all' (every linear layer but the head) or names separated by "
        "commas; the others get plain AdamW")
    galore_rank: int = option(16, "rank r of the gradient projection")
    galore_update_interval: int = option(200, "steps between two SVDs that renew the projection")
    galore_scale: float = option(2.0, "the projected-back update is multiplied by this")

    def __post_init__(self) -> None:
        require(self.galore_rank >= 1, self, "galore_rank", "it must be at least 1")
        require(self.galore_update_interval >= 1, self, "galore_update_interval", "it must be at least 1")
        require(self.galore_scale > 0, self, "galore_scale", "it must be positive")


class _Projector:
    """P for one weight: renewed from the gradient's SVD every `interval` steps."""

    def __init__(self, rank: int, interval: int, scale: float) -> None:
        self.rank, self.interval, self.scale = rank, interval, scale
        self.matrix: torch.Tensor | None = None
        self.right = True  # project from the right (tall gradient) or the left (wide)

    def project(self, grad: torch.Tensor, step: int) -> torch.Tensor:
        self.right = grad.shape[0] >= grad.shape[1]
        if self.matrix is None or step % self.interval == 0:
            u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
            # a copy: a slice would keep the whole SVD factor alive (up to 40x the projection's bytes)
            self.matrix = (vh[: self.rank] if self.right else u[:, : self.rank]).to(grad.dtype, copy=True)
        return grad @ self.matrix.T if self.right else self.matrix.T @ grad  # (m, r) or (r, n)

    def project_back(self, low_rank: torch.Tensor) -> torch.Tensor:
        assert self.matrix is not None
        full = low_rank @ self.matrix if self.right else self.matrix @ low_rank
        return full * self.scale


class GaLoreAdamW(torch.optim.Optimizer):
    """AdamW whose parameter groups with a "rank" key keep their moments in GaLore's subspace.

    A group {"params": [...], "rank": 16, "update_interval": 200, "scale": 2.0} is projected; any
    other group is plain AdamW (decoupled weight decay, bias correction), as in galore-torch.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]  # torch's overloads
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: nn.Parameter, group: dict[str, Any]) -> None:
        state = self.state[param]
        state.setdefault("step", 0)
        grad = param.grad
        assert grad is not None
        if "rank" in group:
            if "projector" not in state:
                state["projector"] = _Projector(group["rank"], group["update_interval"], group["scale"])
            grad = state["projector"].project(grad, state["step"])
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(grad)
            state["exp_avg_sq"] = torch.zeros_like(grad)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = group["lr"] * math.sqrt(1 - beta2 ** state["step"]) / (1 - beta1 ** state["step"])
        update = exp_avg / exp_avg_sq.sqrt().add_(group["eps"])
        if "rank" in group:
            update = state["projector"].project_back(update)
        param.add_(update, alpha=-step_size)
        if group["weight_decay"] > 0:
            param.add_(param, alpha=-group["lr"] * group["weight_decay"])

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, with each projector stored as plain tensors (a checkpoint holds no objects)."""
        saved = super().state_dict()
        for state in saved["state"].values():
            projector = state.pop("projector", None)
            if projector is not None:
                state["projection"] = projector.matrix
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state.get(param, {})
                matrix = state.pop("projection", None)
                if matrix is not None and "rank" in group:
                    projector = _Projector(group["rank"], group["update_interval"], group["scale"])
                    projector.matrix = matrix
                    projector.right = param.shape[0] >= param.shape[1]
                    state["projector"] = projector
