"""Vertical models: small domain models with one interface, made by one factory.

    model = make_model("ft_transformer", ds.schema, seed=0)
    model.fit(ds.features("train"), targets, validation=(ds.features("val"), val_targets))
    p = model.predict_proba(ds.features("test"))     # P(positive), 1-D

targets may be hard (0/1) or soft (probabilities in [0, 1], e.g. an LLM's answers).
Preprocessing follows the schema and is fitted on the training split only (see preprocess.py).
`make_model(None, schema, purpose=...)` picks the documented default of a purpose
(DEFAULT_MODELS); `model_factory` gives seed -> model, as labkit.noisy's methods take it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, Literal

from labkit.data.schema import Schema
from labkit.vertical.base import VerticalModel, check_targets
from labkit.vertical.preprocess import Preprocessor
from labkit.vertical.sklearn_models import BoostingModel, LogisticModel
from labkit.vertical.text import TextClassifier, embed_texts
from labkit.vertical.torch_models import FTTransformerModel, MLPModel, TorchModel
from labkit.vertical.training import TrainConfig

ModelName = Literal["ft_transformer", "mlp", "logistic", "boosting", "text_minilm"]
MODELS: dict[str, type[VerticalModel]] = {
    "ft_transformer": FTTransformerModel,
    "mlp": MLPModel,
    "logistic": LogisticModel,
    "boosting": BoostingModel,
    "text_minilm": TextClassifier,
}
TABULAR_MODELS: tuple[str, ...] = ("ft_transformer", "mlp", "logistic", "boosting")

Purpose = Literal["experiments", "serval"]
# The model used when none is named, by purpose and kind of dataset:
# - "experiments" (lessons 02-03, benchmarks/noisy_labels.py): the MLP, because several noisy-label
#   methods (co-teaching, DivideMix, forward correction) train the networks themselves and need
#   a torch model, so one default serves every method of a comparison;
# - "serval" (the loop's teacher): logistic regression; the pocket LLM answers with a logistic
#   textbook rule plus per-record slips, and a linear model keeps the rule and smooths the slips
#   away, where a flexible network copies more of both (chosen on the development tables: the
#   teacher part and the ft_transformer_teacher ablation of docs/serval_protocol.md).
# Text is MiniLM embeddings with a small head for both.
DEFAULT_MODELS: dict[str, dict[str, str]] = {
    "experiments": {"tabular": "mlp", "text": "text_minilm"},
    "serval": {"tabular": "logistic", "text": "text_minilm"},
}
# Options of the torch training loop; with skip_torch_options a scikit-learn model ignores them,
# so that one set of options (e.g. epochs=30) serves a comparison of every model.
TORCH_OPTIONS = frozenset({f.name for f in fields(TrainConfig)} | {"swap_rate", "device"})


def default_model(schema: Schema, purpose: Purpose) -> str:
    """The model a purpose uses when none is named (see DEFAULT_MODELS)."""
    if purpose not in DEFAULT_MODELS:
        raise ValueError(f"purpose={purpose!r}: choose one of {list(DEFAULT_MODELS)}")
    return DEFAULT_MODELS[purpose][schema.kind]


def make_model(name: str | None, schema: Schema | None = None, *, purpose: Purpose = "experiments",
               quiet: bool = False, skip_torch_options: bool = False, **options: Any) -> VerticalModel:
    """A new, unfitted model by name (see MODELS), or the purpose's default when name is None.

    options go to its constructor (seed, epochs, ...); one it does not take is a TypeError.
    skip_torch_options: a scikit-learn model ignores the torch training options (TORCH_OPTIONS),
    for comparisons that give every model one set of options. quiet: no progress bar per fit,
    for callers that fit many models and report progress themselves.
    """
    if name is None:
        if schema is None:
            raise ValueError("make_model(None, ...) picks the default model of a dataset: pass its schema")
        name = default_model(schema, purpose)
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {list(MODELS)}")
    if schema is not None and (schema.kind == "text") != (name == "text_minilm"):
        expected = "text_minilm" if schema.kind == "text" else f"one of {list(TABULAR_MODELS)}"
        raise ValueError(f"{schema.name} is a {schema.kind} dataset; use {expected}")
    if issubclass(MODELS[name], TorchModel):
        options = {"progress": False, **options} if quiet else options
    elif skip_torch_options:
        options = {k: v for k, v in options.items() if k not in TORCH_OPTIONS}
    return MODELS[name](schema, **options)  # type: ignore[call-arg]


def model_factory(name: str | None, schema: Schema, *, purpose: Purpose, skip_torch_options: bool = False,
                  **options: Any) -> Callable[[int], VerticalModel]:
    """seed -> a new, quiet, unfitted model (make_model), as labkit.noisy's methods take it."""
    def factory(seed: int) -> VerticalModel:
        return make_model(name, schema, purpose=purpose, quiet=True, skip_torch_options=skip_torch_options,
                          seed=seed, **options)

    return factory


__all__ = [
    "DEFAULT_MODELS", "MODELS", "TABULAR_MODELS", "TORCH_OPTIONS", "BoostingModel", "FTTransformerModel",
    "LogisticModel", "MLPModel", "ModelName", "Preprocessor", "Purpose", "TextClassifier", "TorchModel",
    "VerticalModel", "check_targets", "default_model", "embed_texts", "make_model", "model_factory",
]
