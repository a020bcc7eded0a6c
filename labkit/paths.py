"""Where the kit's files are: decided here, and only here.

    DATA_DIR        the shipped files: datasets/, knowledge/ and models/
    DATASETS_DIR    the medical datasets (CSV files, their licenses and checksums)
    KNOWLEDGE_DIR   the clinical rules the pocket LLM learned from
    POCKET_LLM      the embedded pocket LLM, a Hugging Face model folder
    CACHE_DIR       what lessons and benchmarks keep between runs (LLM answers, text embeddings)
    PACKAGE_PARENT  the folder that holds the labkit package (kernels and workers import it from there)

A source checkout reads the repository's data/ folder. An installed kit (`pip install .`) carries
the same files inside the package as labkit/shipped/ (pyproject.toml maps data/ onto it), so both
find them from any working directory. Two environment variables, read when labkit is imported,
override the defaults:

    LABKIT_DATA_DIR    a folder laid out like data/ (e.g. a teacher's copy with more datasets)
    LABKIT_CACHE_DIR   where caches go (default: $XDG_CACHE_HOME/labkit, i.e. ~/.cache/labkit);
                       never the source tree or the installed package

Run folders (`runs/serval`, checkpoints) are outputs the user names: they default to paths
relative to the working directory, as LlamaFactory's output_dir does.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_PARENT = PACKAGE_DIR.parent


def _data_dir() -> Path:
    override = os.environ.get("LABKIT_DATA_DIR")
    if override:
        return Path(override).expanduser().resolve()
    installed = PACKAGE_DIR / "shipped"
    return installed if installed.is_dir() else PACKAGE_PARENT / "data"


def _cache_dir() -> Path:
    override = os.environ.get("LABKIT_CACHE_DIR")
    if override:
        return Path(override).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "labkit"


DATA_DIR = _data_dir()
DATASETS_DIR = DATA_DIR / "datasets"
KNOWLEDGE_DIR = DATA_DIR / "knowledge"
MODELS_DIR = DATA_DIR / "models"
POCKET_LLM = MODELS_DIR / "pocket-llm"
CACHE_DIR = _cache_dir()


def shipped_name(path: str | os.PathLike[str]) -> str:
    """A path inside DATA_DIR written as `data/...`, whichever machine or layout it is on (for
    records such as the pocket LLM's training.json); any other path is written as it is."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(DATA_DIR):
        return str(Path("data") / resolved.relative_to(DATA_DIR))
    return str(path)
