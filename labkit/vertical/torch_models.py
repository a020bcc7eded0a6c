"""Torch vertical models: the MLP and the FT-Transformer of Gorishniy et al. (2021).

Both networks come from the authors' reference package `rtdl_revisiting_models`. Every torch model
turns its input into one float matrix (`prepare` on the training split, `inputs` afterwards) and
builds networks that map it to one logit per row (`new_network`). The noisy-label methods use
these three hooks to train networks their own way (two networks, selection, mixup) and then set
`model.networks`; `predict_proba` averages the networks it holds.

Precision: fp32 on every device. These networks are tiny, so reduced precision would save nothing
and cost accuracy; the device comes from labkit.hardware.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import rtdl_revisiting_models as rtdl
import torch
from torch import Tensor, nn

from labkit import hardware
from labkit.data.schema import Schema
from labkit.vertical.base import (
    Features,
    Validation,
    VerticalModel,
    check_targets,
    check_weights,
)
from labkit.vertical.preprocess import Preprocessor, as_frame
from labkit.vertical.training import THREADS, TrainConfig, train_network


class MLPNet(nn.Module):
    """The reference MLP with one output, returning logits of shape (n,)."""

    def __init__(self, d_in: int, n_blocks: int, d_block: int, dropout: float) -> None:
        super().__init__()
        self.mlp = rtdl.MLP(d_in=d_in, d_out=1, n_blocks=n_blocks, d_block=d_block, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x).squeeze(-1)


class FTNet(nn.Module):
    """The reference FT-Transformer on one packed input: numeric columns, then category codes.

    `forward_mixed` interpolates two batches in token space, which is where mixup makes sense for
    categorical features (an average of two category codes is not a category).
    """

    def __init__(self, n_numeric: int, cardinalities: list[int], **backbone: Any) -> None:
        super().__init__()
        self.n_numeric = n_numeric
        self.model = rtdl.FTTransformer(n_cont_features=n_numeric, cat_cardinalities=cardinalities,
                                        d_out=1, **backbone)

    def tokens(self, x: Tensor) -> Tensor:
        m = self.model
        parts = [m.cls_embedding(x.shape[:-1])]
        if m.cont_embeddings is not None:
            parts.append(m.cont_embeddings(x[:, : self.n_numeric]))
        if m.cat_embeddings is not None:
            parts.append(m.cat_embeddings(x[:, self.n_numeric:].long()))
        return torch.cat(parts, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.model.backbone(self.tokens(x)).squeeze(-1)

    def forward_mixed(self, xa: Tensor, xb: Tensor, lam: float) -> Tensor:
        mixed = lam * self.tokens(xa) + (1 - lam) * self.tokens(xb)
        return self.model.backbone(mixed).squeeze(-1)

    def make_parameter_groups(self) -> list[dict[str, Any]]:
        return self.model.make_parameter_groups()


class TorchModel(VerticalModel):
    """Shared fit / predict of the torch models (see the module docstring for the hooks).

    seed fixes initialization, dropout and batch order: the same seed gives the same numbers.
    swap_rate: the share of input entries replaced by another row's value when a noisy-label
    method asks for an augmented view (`augment`).
    """

    def __init__(self, schema: Schema | None = None, *, seed: int = 0, epochs: int = 100,
                 batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-4,
                 patience: int = 20, progress: bool = True, swap_rate: float = 0.15,
                 device: str | torch.device | None = None) -> None:
        super().__init__()
        self.schema = schema
        self.seed = seed
        self.config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                                  weight_decay=weight_decay, patience=patience, progress=progress)
        self.swap_rate = swap_rate
        self.device = torch.device(device) if device is not None else hardware.device()
        self.networks: list[nn.Module] = []
        self.n_inputs = 0

    # ----- hooks for subclasses -----
    def prepare(self, X: Features) -> Tensor:
        """Fit the input encoding on the training rows and return them encoded."""
        raise NotImplementedError

    def inputs(self, X: Features) -> Tensor:
        """Encode rows with the encoding fitted by `prepare`."""
        raise NotImplementedError

    def new_network(self) -> nn.Module:
        """A freshly initialized network for the prepared inputs (make it inside `seeded()`)."""
        raise NotImplementedError

    # ----- shared -----
    def seeded(self) -> AbstractContextManager[None]:
        """Make and train this model's networks inside this block: seeded by the model's seed, on
        THREADS CPU threads (labkit.vertical.training says why), so the same seed gives the same
        numbers whichever method trains them."""
        return hardware.seeded(self.seed, threads=THREADS)

    def tensor(self, values: np.ndarray) -> Tensor:
        """A float32 tensor on the model's device."""
        return torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.device)

    def validation_tensors(self, validation: Validation | None) -> tuple[Tensor, Tensor] | None:
        """(inputs, targets) of a validation pair, encoded like the training rows."""
        if validation is None:
            return None
        X_val, t_val = validation
        return self.inputs(X_val), self.tensor(check_targets(t_val, len(X_val), "validation"))

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Swap noise: each entry is replaced, with probability `swap_rate`, by the same column's
        value in a random row. It keeps every column's distribution (categories stay categories),
        which makes it a safe augmentation for any tabular or embedding input."""
        n, d = x.shape
        swap = (torch.rand(n, d, generator=generator) < self.swap_rate).to(x.device)
        donors = torch.randint(0, n, (n, d), generator=generator).to(x.device)
        return torch.where(swap, x.gather(0, donors), x)

    def fit(self, X: Features, targets: Any, sample_weight: Any = None,
            validation: Validation | None = None, *,
            on_epoch: Callable[[int, TorchModel], None] | None = None) -> TorchModel:
        """Train one network. With validation, keep the epoch of lowest validation loss.

        on_epoch(epoch, model) is called after each epoch with the model usable for prediction
        (memorization curves use it).
        """
        x = self.prepare(X)
        y = self.tensor(check_targets(targets, len(x)))
        w = self.tensor(check_weights(sample_weight, len(x)))
        val = self.validation_tensors(validation)
        callback = (lambda epoch: on_epoch(epoch, self)) if on_epoch is not None else None
        with self.seeded():
            net = self.new_network()
            self.networks = [net]
            result = train_network(net, x, y, w, config=self.config, seed=self.seed,
                                   validation=val, stop_metric=self.stop_metric,
                                   on_epoch=callback, desc=self.name)
        self.info = result.summary()
        self.history = result.history
        return self

    @torch.no_grad()
    def proba(self, x: Tensor) -> Tensor:
        """Mean P(positive) over the held networks, each in eval mode (its mode is restored)."""
        if not self.networks:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(X, targets) first")
        total = torch.zeros(len(x), device=x.device)
        for net in self.networks:
            was_training = net.training
            net.eval()
            total += torch.sigmoid(net(x))
            net.train(was_training)
        return total / len(self.networks)

    def predict_proba(self, X: Features) -> np.ndarray:
        return self.proba(self.inputs(X)).cpu().numpy().astype(np.float64)


class MLPModel(TorchModel):
    """The MLP of Gorishniy et al. (2021) on schema-preprocessed (flat, one-hot) inputs."""

    name = "mlp"

    def __init__(self, schema: Schema | None = None, *, n_blocks: int = 2, d_block: int = 64,
                 dropout: float = 0.1, **train: Any) -> None:
        super().__init__(schema, **train)
        self.arch = dict(n_blocks=n_blocks, d_block=d_block, dropout=dropout)
        self.preprocessor = Preprocessor(schema, "quantile", self.seed)

    def prepare(self, X: Features) -> Tensor:
        frame = as_frame(X)
        x = self.tensor(self.preprocessor.fit(frame).flat(frame))
        self.n_inputs = x.shape[1]
        return x

    def inputs(self, X: Features) -> Tensor:
        return self.tensor(self.preprocessor.flat(X))

    def new_network(self) -> nn.Module:
        return MLPNet(self.n_inputs, **self.arch).to(self.device)  # type: ignore[arg-type]


class FTTransformerModel(TorchModel):
    """FT-Transformer (Gorishniy et al. 2021): every feature becomes a token; attention mixes them.

    Numeric columns (and missing indicators) get linear embeddings, categorical and binary
    columns get embedding tables; the prediction is read from a [CLS] token. Defaults are a small
    configuration for tables of a few hundred rows (the paper's default has 3 blocks of width 192).
    """

    name = "ft_transformer"

    def __init__(self, schema: Schema | None = None, *, n_blocks: int = 2, d_block: int = 64,
                 attention_n_heads: int = 8, attention_dropout: float = 0.15,
                 ffn_dropout: float = 0.05, residual_dropout: float = 0.0, lr: float = 3e-4,
                 weight_decay: float = 1e-5, **train: Any) -> None:
        super().__init__(schema, lr=lr, weight_decay=weight_decay, **train)
        self.arch = dict(n_blocks=n_blocks, d_block=d_block, attention_n_heads=attention_n_heads,
                         attention_dropout=attention_dropout, ffn_d_hidden=None,
                         ffn_d_hidden_multiplier=4 / 3, ffn_dropout=ffn_dropout,
                         residual_dropout=residual_dropout)
        self.preprocessor = Preprocessor(schema, "quantile", self.seed)

    def _pack(self, X: Features) -> Tensor:
        numeric, codes = self.preprocessor.numeric(X), self.preprocessor.codes(X)
        return self.tensor(np.concatenate([numeric, codes.astype(np.float32)], axis=1))

    def prepare(self, X: Features) -> Tensor:
        self.preprocessor.fit(X)
        x = self._pack(X)
        self.n_inputs = x.shape[1]
        return x

    def inputs(self, X: Features) -> Tensor:
        return self._pack(X)

    def new_network(self) -> nn.Module:
        return FTNet(self.preprocessor.n_numeric, self.preprocessor.cardinalities,
                     **self.arch).to(self.device)
