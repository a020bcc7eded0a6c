"""The training loop of the torch vertical models: soft-target BCE, AdamW, early stopping.

Small on purpose: the datasets have a few hundred rows, so one epoch is a handful of mini-batches
and a whole fit takes seconds on a CPU. The noisy-label methods (labkit.noisy) reuse the pieces
(`batches`, `make_optimizer`, `EarlyStopping`) for their own loops. Every network is made and
trained inside `TorchModel.seeded()`: seeded, and on THREADS (one) CPU thread, because these
networks multiply matrices of a few dozen columns, where splitting the work across threads costs
more than it saves (docs/noisy_labels.md has the timing).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from labkit.config import option, require
from labkit.vertical.base import StopMetric, validation_score

THREADS = 1  # CPU threads of a vertical model's fit (see the module docstring)
# A loss maps (logits, targets) to one loss per sample; the loop takes the weighted mean.
LossFn = Callable[[Tensor, Tensor], Tensor]


def soft_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample binary cross-entropy against targets in [0, 1] (hard or soft)."""
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


@dataclass
class TrainConfig:
    """How a torch vertical model is trained (the torch models take these as keyword options)."""

    epochs: int = option(100, "passes over the training rows, at most")
    batch_size: int = option(64, "rows per mini-batch")
    lr: float = option(1e-3, "AdamW learning rate")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    patience: int = option(
        20, "epochs without a better validation value before training stops (with a validation "
            "set only; without one, all epochs run)")
    progress: bool = option(True, "show a progress bar per fit", bookkeeping=True)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            require(getattr(self, name) >= 1, self, name, "it must be at least 1")
        require(self.lr > 0, self, "lr", "it must be positive")
        require(self.weight_decay >= 0, self, "weight_decay", "it must be 0 or more")


@dataclass
class TrainResult:
    """What a training run did: epochs run, the epoch kept (and its validation value), and the
    losses per epoch."""

    epochs_run: int
    best_epoch: int
    best_val: float | None
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The result without the per-epoch history."""
        out = asdict(self)
        out.pop("history")
        return out


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """Shuffled mini-batch indices covering 0..n-1 once.

    A last batch of a single row is merged into the previous one: one row gives a noisy step.
    """
    order = torch.randperm(n, generator=generator)
    parts = list(order.split(batch_size))
    if len(parts) > 1 and len(parts[-1]) == 1:
        last = parts.pop()
        parts[-1] = torch.cat([parts[-1], last])
    return parts


def make_optimizer(net: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; networks that know better parameter groups (FT-Transformer: no decay on norms and
    embeddings, Gorishniy et al. 2021) provide `make_parameter_groups`."""
    groups_fn = getattr(net, "make_parameter_groups", None)
    params = groups_fn() if callable(groups_fn) else net.parameters()
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def validation_value(nets: list[nn.Module], x: Tensor, targets: Tensor, metric: StopMetric,
                     loss: LossFn = soft_bce) -> float:
    """What early stopping minimizes for the mean prediction of the networks (in eval mode):
    the training loss for metric "loss" (one network), else `validation_score`."""
    modes = [net.training for net in nets]
    for net in nets:
        net.eval()
    if metric == "loss" and len(nets) == 1:
        value = float(loss(nets[0](x), targets).mean())
    else:
        probs = torch.stack([torch.sigmoid(net(x)) for net in nets]).mean(0)
        value = validation_score(probs.cpu().numpy().astype("float64"),
                                 targets.cpu().numpy().astype("float64"), metric)
    for net, mode in zip(nets, modes, strict=True):
        net.train(mode)
    return value


class EarlyStopping:
    """Keeps the state of the best epoch so far and says when to stop.

    `step(value, modules)` records one epoch's validation value (lower is better) and returns
    True when `patience` epochs passed without improvement.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = math.inf
        self.best_epoch = 0
        self.epoch = 0
        self.states: list[dict[str, Tensor]] | None = None

    def step(self, value: float, modules: list[nn.Module]) -> bool:
        self.epoch += 1
        if value < self.best - 1e-6:
            self.best, self.best_epoch = value, self.epoch
            self.states = [copy.deepcopy(m.state_dict()) for m in modules]
        return self.epoch - self.best_epoch >= self.patience

    def restore(self, modules: list[nn.Module]) -> None:
        """Load the best states back into the modules (no-op if nothing was recorded)."""
        if self.states is not None:
            for module, state in zip(modules, self.states, strict=True):
                module.load_state_dict(state)


def train_network(net: nn.Module, x: Tensor, targets: Tensor, weights: Tensor | None = None, *,
                  config: TrainConfig, seed: int = 0,
                  validation: tuple[Tensor, Tensor] | None = None, loss: LossFn = soft_bce,
                  stop_metric: StopMetric = "loss", on_epoch: Callable[[int], None] | None = None,
                  desc: str = "training") -> TrainResult:
    """Train `net` (logits of shape (n,)) on soft targets with weighted mini-batch AdamW.

    With a validation set (inputs, targets), the state with the lowest validation value is kept
    (`stop_metric` "loss": the unweighted training loss; else `validation_score`) and training stops
    after `config.patience` epochs without improvement. `on_epoch(epoch)` is
    called after every epoch (memorization curves use it).
    """
    weights = torch.ones_like(targets) if weights is None else weights
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(net, config.lr, config.weight_decay)
    stopper = EarlyStopping(config.patience)
    history: list[dict[str, float]] = []
    bar = tqdm(range(1, config.epochs + 1), desc=desc, disable=not config.progress, leave=False)
    for epoch in bar:
        net.train()
        total = 0.0
        for idx in batches(len(x), config.batch_size, generator):
            idx = idx.to(x.device)
            per_sample = loss(net(x[idx]), targets[idx])
            batch_loss = (per_sample * weights[idx]).sum() / weights[idx].sum().clamp_min(1e-12)
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()
            total += batch_loss.item() * len(idx)
        record = {"epoch": float(epoch), "train_loss": total / len(x)}
        stop = False
        if validation is not None:
            record["val"] = validation_value([net], *validation, stop_metric, loss)
            stop = stopper.step(record["val"], [net])
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if on_epoch is not None:
            on_epoch(epoch)
        if stop:
            break
    stopper.restore([net])
    net.eval()
    best_epoch = stopper.best_epoch if validation is not None else len(history)
    return TrainResult(len(history), best_epoch,
                       stopper.best if validation is not None else None, history)
