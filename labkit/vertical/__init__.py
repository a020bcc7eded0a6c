"""Vertical models: small domain models with one interface.

    model = make_model("ft_transformer", ds.schema, seed=0)
    model.fit(ds.features("train"), targets, validation=(ds.features("val"), val_targets))
    p = model.predict_proba(ds.features("test"))     # P(positive), 1-D

targets may be hard (0/1) or soft (probabilities in [0, 1], e.g. an LLM's answers).
Preprocessing follows the schema and is fitted on the training split only (see preprocess.py).
"""

from __future__ import annotations

from typing import Any

from labkit.data.schema import Schema
from labkit.vertical.base import VerticalModel, check_targets
from labkit.vertical.preprocess import Preprocessor
from labkit.vertical.sklearn_models import BoostingModel, LogisticModel
from labkit.vertical.text import TextClassifier, embed_texts
from labkit.vertical.torch_models import FTTransformerModel, MLPModel, TorchModel

MODELS: dict[str, type[VerticalModel]] = {
    "ft_transformer": FTTransformerModel,
    "mlp": MLPModel,
    "logistic": LogisticModel,
    "boosting": BoostingModel,
    "text_minilm": TextClassifier,
}
TABULAR_MODELS: tuple[str, ...] = ("ft_transformer", "mlp", "logistic", "boosting")


def make_model(name: str, schema: Schema | None = None, **options: Any) -> VerticalModel:
    """A new, unfitted model by name (see MODELS); options go to its constructor (seed, epochs...)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose one of {list(MODELS)}")
    if schema is not None and (schema.kind == "text") != (name == "text_minilm"):
        expected = "text_minilm" if schema.kind == "text" else f"one of {list(TABULAR_MODELS)}"
        raise ValueError(f"{schema.name} is a {schema.kind} dataset; use {expected}")
    return MODELS[name](schema, **options)  # type: ignore[call-arg]


__all__ = [
    "MODELS", "TABULAR_MODELS", "BoostingModel", "FTTransformerModel", "LogisticModel",
    "MLPModel", "Preprocessor", "TextClassifier", "TorchModel", "VerticalModel", "check_targets",
    "embed_texts", "make_model",
]
