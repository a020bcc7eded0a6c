"""Two-network methods: co-teaching and a DivideMix for tables.

Two networks with different initializations make different mistakes; letting each one choose the
training rows (or the labels) for the other keeps a network from confirming its own errors.
Both methods stop early on the confident rows (`stopping_set`) and predict with the average of
the two networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.mixture import GaussianMixture
from torch import Tensor, nn
from tqdm.auto import tqdm

from labkit.config import option, require
from labkit.noisy.correction import estimate_transition, noise_rate
from labkit.noisy.losses import prior_penalty, sharpen, soft_bce
from labkit.noisy.selection import take
from labkit.noisy.stopping import ModelFactory, StopSet, out_of_fold_proba, require_torch, stopping_set
from labkit.vertical.base import Features, Validation, sides
from labkit.vertical.torch_models import TorchModel
from labkit.vertical.training import (
    EarlyStopping,
    batches,
    make_optimizer,
    train_network,
    validation_value,
)


@dataclass
class _Setup:
    model: TorchModel
    x: Tensor
    y: Tensor
    stop: StopSet
    stop_x: Tensor
    stop_y: Tensor
    side: np.ndarray  # the class each training row stands for (labkit.vertical.base.sides)


def _setup(factory: ModelFactory, X: Features, targets: np.ndarray,
           validation: Validation | None, seed: int, method: str) -> _Setup:
    model = require_torch(factory(seed), method)
    stop = stopping_set(X, targets, validation, seed=seed)
    x = model.prepare(take(X, stop.train_rows))
    y = targets[stop.train_rows]
    return _Setup(model, x, model.tensor(y), stop, model.inputs(stop.X), model.tensor(stop.targets),
                  sides(y))


@torch.no_grad()
def _mean_proba(nets: list[nn.Module], x: Tensor) -> Tensor:
    for net in nets:
        net.eval()
    p = torch.stack([torch.sigmoid(net(x)) for net in nets]).mean(0)
    for net in nets:
        net.train()
    return p


def _stop_value(s: _Setup, nets: list[nn.Module]) -> float:
    return validation_value(nets, s.stop_x, s.stop_y, s.model.stop_metric)


def _finish(s: _Setup, nets: list[nn.Module], stopper: EarlyStopping, extra: dict[str, Any]
            ) -> TorchModel:
    stopper.restore(nets)
    for net in nets:
        net.eval()
    s.model.networks = nets
    s.model.info = {"best_epoch": stopper.best_epoch, "epochs_run": stopper.epoch,
                    "best_val": stopper.best, **s.stop.summary(), **extra}
    return s.model


# ----- co-teaching -----
def small_loss_rows(loss: Tensor, labels: Tensor, keep_share: float) -> Tensor:
    """The `keep_share` smallest-loss rows of each class (labels: 0/1, the rows' `sides`).

    Selecting per class matters: ranked together, the rows of the class the network currently
    favors have the smaller losses, so the other class would be dropped more and more, and the
    networks drift toward one class (docs/noisy_labels.md has the measurement). The classes are
    the rows' sides, not their rounded targets: when every target is below 0.5, rounding makes
    one class, and the rows the annotator suspects most (the largest losses) are dropped first.
    """
    keep = []
    for c in (False, True):
        rows = torch.nonzero((labels >= 0.5) == c).squeeze(1)
        n = math.ceil(keep_share * len(rows))
        keep.append(rows[torch.argsort(loss.detach()[rows])[:n]])
    return torch.cat(keep)


def co_teaching(factory: ModelFactory, X: Features, targets: np.ndarray, *,
                validation: Validation | None, seed: int, forget_rate: float | None = None,
                ramp_epochs: int = 10) -> TorchModel:
    """Co-teaching (Han et al. 2018).

    In every mini-batch each network ranks the rows by its loss and passes its (1 - forget_rate)
    smallest-loss rows, per class, to the other network, which learns from those only. Networks
    fit clean patterns before noise (memorization effect), so small loss means probably clean.
    The forget rate ramps up over `ramp_epochs`; by default it is the noise rate estimated from
    out-of-fold predictions (see `estimate_transition`). With soft targets the loss includes the
    label's own uncertainty, so unsure annotations are dropped first.
    """
    if forget_rate is None:
        oof = out_of_fold_proba(factory, X, targets, seed=seed)
        forget_rate = min(0.5, noise_rate(estimate_transition(oof), targets))
    s = _setup(factory, X, targets, validation, seed, "co_teaching")
    config = s.model.config
    side = s.model.tensor(s.side)
    with s.model.seeded():
        nets = [s.model.new_network(), s.model.new_network()]
        optimizers = [make_optimizer(n, config.lr, config.weight_decay) for n in nets]
        generator = torch.Generator().manual_seed(s.model.seed)
        stopper = EarlyStopping(config.patience)
        for epoch in tqdm(range(1, config.epochs + 1), desc="co-teaching",
                          disable=not config.progress, leave=False):
            rate = forget_rate * min(1.0, epoch / ramp_epochs)
            for idx in batches(len(s.x), config.batch_size, generator):
                idx = idx.to(s.x.device)
                losses = [soft_bce(net(s.x[idx]), s.y[idx]) for net in nets]
                small = [small_loss_rows(loss, side[idx], 1 - rate) for loss in losses]
                for k in (0, 1):
                    optimizers[k].zero_grad()
                    losses[k][small[1 - k]].mean().backward()  # learn from the peer's choice
                    optimizers[k].step()
            if stopper.step(_stop_value(s, nets), nets):
                break
    return _finish(s, nets, stopper, {"forget_rate": round(forget_rate, 4)})


# ----- DivideMix -----
@dataclass
class DivideMixConfig:
    """DivideMix settings (Li et al. 2020), scaled to tables of a few hundred rows."""

    epochs: int = option(40, "semi-supervised epochs after the warm-up")
    p_clean: float = option(0.5, "GMM clean probability above which a row keeps its label")
    temperature: float = option(0.5, "sharpening temperature of the guessed labels")
    alpha: float = option(0.75, "mixup mixes with a weight drawn from Beta(alpha, alpha)")
    lambda_u: float = option(1.0, "weight of the loss on unlabeled rows (their guessed labels)")
    ramp_epochs: int = option(10, "epochs over which lambda_u ramps up linearly from 0")
    n_views: int = option(2, "augmented views averaged when guessing a label")

    def __post_init__(self) -> None:
        for name in ("epochs", "ramp_epochs", "n_views"):
            require(getattr(self, name) >= 1, self, name, "it must be at least 1")
        require(0 < self.p_clean < 1, self, "p_clean", "use a probability in (0, 1)")
        require(self.temperature > 0, self, "temperature", "it must be positive")
        require(self.alpha > 0, self, "alpha", "it must be positive")
        require(self.lambda_u >= 0, self, "lambda_u", "it must be 0 or more")


def clean_probability(per_sample_loss: np.ndarray, seed: int) -> np.ndarray:
    """P(clean) of each row: a two-component Gaussian mixture on the normalized per-row loss,
    the component with the smaller mean being the clean one (DivideMix's co-divide)."""
    loss = np.asarray(per_sample_loss, dtype=np.float64)
    span = loss.max() - loss.min()
    loss = ((loss - loss.min()) / span if span > 0 else np.zeros_like(loss)).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4,
                          random_state=seed).fit(loss)
    clean = int(np.argmin(gmm.means_.ravel()))
    return gmm.predict_proba(loss)[:, clean]


def classwise_clean_probability(per_sample_loss: np.ndarray, labels: np.ndarray, seed: int,
                                min_rows: int = 10) -> np.ndarray:
    """`clean_probability` fitted within each class (labels: 0/1, the rows' `sides`).

    One mixture over both classes lets the class the networks favor look clean and the other
    noisy, so the labeled part fills with one class and the networks drift toward it
    (docs/noisy_labels.md has the measurement). Per class, each class keeps its own clean rows. A
    class with fewer than `min_rows` rows counts as clean.
    """
    out = np.ones(len(per_sample_loss))
    for c in (0, 1):
        rows = np.flatnonzero(np.asarray(labels) == c)
        if len(rows) >= min_rows:
            out[rows] = clean_probability(per_sample_loss[rows], seed)
    return out


@torch.no_grad()
def _per_sample_loss(net: nn.Module, x: Tensor, y: Tensor) -> np.ndarray:
    net.eval()
    loss = soft_bce(net(x), y)
    net.train()
    return loss.cpu().numpy()


def _mixed_logits(net: nn.Module, xa: Tensor, xb: Tensor, lam: float) -> Tensor:
    """Logits of the mixup of two batches; FT-Transformers mix in token space (`forward_mixed`)."""
    forward_mixed = getattr(net, "forward_mixed", None)
    if callable(forward_mixed):
        return forward_mixed(xa, xb, lam)
    return net(lam * xa + (1 - lam) * xb)


def _views(model: TorchModel, x: Tensor, n: int, generator: torch.Generator) -> list[Tensor]:
    return [model.augment(x, generator) for _ in range(n)]


@torch.no_grad()
def _guess(nets: list[nn.Module], views: list[Tensor]) -> Tensor:
    """Mean P(positive) over networks and augmented views."""
    return torch.stack([_mean_proba(nets, v) for v in views]).mean(0)


def _divide_mix_epoch(model: TorchModel, net: nn.Module, peer: nn.Module,
                      optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *, w_clean: Tensor,
                      cfg: DivideMixConfig, lambda_u: float, prior: float,
                      generator: torch.Generator, rng: np.random.Generator) -> None:
    """One epoch of MixMatch-style training of `net` on the division made by `peer`."""
    labeled = torch.nonzero(w_clean > cfg.p_clean).squeeze(1)
    unlabeled = torch.nonzero(w_clean <= cfg.p_clean).squeeze(1)
    if len(labeled) < 2:  # the mixture found (almost) nothing clean: trust the lowest losses
        labeled = torch.argsort(w_clean, descending=True)[: max(2, len(w_clean) // 10)]
    batch_size = model.config.batch_size
    u_order = unlabeled[torch.randperm(len(unlabeled), generator=generator).to(x.device)]
    for b, idx in enumerate(batches(len(labeled), batch_size, generator)):
        lx = labeled[idx.to(x.device)]
        ux = u_order[(torch.arange(len(lx)) + b * batch_size).to(x.device) % len(u_order)] \
            if len(u_order) else lx[:0]
        l_views = _views(model, x[lx], cfg.n_views, generator)
        u_views = _views(model, x[ux], cfg.n_views, generator)
        with torch.no_grad():
            w = w_clean[lx]
            # co-refinement: the given label, blended with the network's guess by P(clean)
            refined = sharpen(w * y[lx] + (1 - w) * _guess([net], l_views), cfg.temperature)
            # co-guessing: both networks guess the labels of the rows judged noisy
            guessed = sharpen(_guess([net, peer], u_views), cfg.temperature)
        inputs = torch.cat(l_views + u_views)
        targets = torch.cat([refined] * cfg.n_views + [guessed] * cfg.n_views)
        lam = float(rng.beta(cfg.alpha, cfg.alpha))
        lam = max(lam, 1 - lam)  # keep each mixed row closer to its own input and label
        perm = torch.randperm(len(inputs), generator=generator).to(x.device)
        logits = _mixed_logits(net, inputs, inputs[perm], lam)
        mixed = lam * targets + (1 - lam) * targets[perm]
        n_l = len(lx) * cfg.n_views
        loss = soft_bce(logits[:n_l], mixed[:n_l]).mean()
        if len(logits) > n_l:
            loss = loss + lambda_u * F.mse_loss(torch.sigmoid(logits[n_l:]), mixed[n_l:])
        loss = loss + prior_penalty(torch.sigmoid(logits), prior)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def divide_mix(factory: ModelFactory, X: Features, targets: np.ndarray, *,
               validation: Validation | None, seed: int,
               config: DivideMixConfig | None = None) -> TorchModel:
    """DivideMix (Li et al. 2020) for tabular rows and soft labels.

    1. Warm-up: each network trains on all targets, stopping early on the confident rows.
    2. Every epoch, for each network: Gaussian mixtures on the *peer's* per-row losses (one per
       class, see `classwise_clean_probability`) split the rows into labeled (probably clean) and
       unlabeled (probably noisy); the network then trains semi-supervised (MixMatch): labels of
       labeled rows are refined with its own guess, labels of unlabeled rows are guessed by both
       networks, both are sharpened, and inputs and labels are mixed (mixup). Augmented views
       use swap noise (`TorchModel.augment`). A prior penalty keeps the mean prediction near the
       annotated prevalence.
    3. The semi-supervised epoch with the best stop value on the confident rows is kept. (Not
       the warm-up: its stop value is the best of many noisy measurements, an optimistic
       baseline that later epochs rarely beat even when they are better.)
    With soft targets the per-row loss includes the annotation's own uncertainty, so unsure
    annotations tend to land in the unlabeled part, where the networks relabel them.
    """
    cfg = config or DivideMixConfig()
    s = _setup(factory, X, targets, validation, seed, "divide_mix")
    model, train_cfg = s.model, s.model.config
    prior = float(s.y.mean())
    rng = np.random.default_rng(seed)
    with model.seeded():
        nets = [model.new_network(), model.new_network()]
        for k, net in enumerate(nets):
            train_network(net, s.x, s.y, config=train_cfg, seed=model.seed + k,
                          validation=(s.stop_x, s.stop_y), stop_metric=model.stop_metric,
                          desc=f"warm-up {k + 1}")
            net.train()
        optimizers = [make_optimizer(n, train_cfg.lr, train_cfg.weight_decay) for n in nets]
        generator = torch.Generator().manual_seed(model.seed)
        stopper = EarlyStopping(train_cfg.patience)
        clean_share = []
        for epoch in tqdm(range(1, cfg.epochs + 1), desc="divide-mix",
                          disable=not train_cfg.progress, leave=False):
            lambda_u = cfg.lambda_u * min(1.0, epoch / cfg.ramp_epochs)
            w = [classwise_clean_probability(_per_sample_loss(net, s.x, s.y), s.side, seed + epoch)
                 for net in nets]
            clean_share.append(float(np.mean([(wk > cfg.p_clean).mean() for wk in w])))
            for k in (0, 1):
                _divide_mix_epoch(model, nets[k], nets[1 - k], optimizers[k], s.x, s.y,
                                  w_clean=model.tensor(w[1 - k]), cfg=cfg, lambda_u=lambda_u,
                                  prior=prior, generator=generator, rng=rng)
            if stopper.step(_stop_value(s, nets), nets):
                break
    return _finish(s, nets, stopper, {"clean_share": [round(c, 3) for c in clean_share]})
