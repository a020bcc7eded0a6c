"""Pictures a learner would rather look at than a table. Each function returns its Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from labkit.data import LABEL, Dataset, load


def class_balance(names: tuple[str, ...]) -> Figure:
    """Stacked bars: negatives and positives of each dataset."""
    datasets = [load(n) for n in names]
    pos = np.array([int(ds.frame[LABEL].sum()) for ds in datasets])
    neg = np.array([len(ds) for ds in datasets]) - pos
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.barh(names, neg, label="label 0", color="#9bb7d4")
    ax.barh(names, pos, left=neg, label="label 1 (positive)", color="#d1605e")
    for i, ds in enumerate(datasets):
        ax.text(len(ds) + 10, i, f"{pos[i] / len(ds):.0%} positive", va="center", fontsize=8)
    ax.set_xlabel("rows")
    ax.set_title("Class balance")
    ax.legend(loc="lower right", fontsize=8)
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def distributions(ds: Dataset, features: list[str] | None = None, bins: int = 25) -> Figure:
    """Histograms of numeric features, split by label: which features separate the classes?"""
    numeric = [f.name for f in ds.schema.features if f.kind == "numeric"]
    features = features or numeric[:8]
    cols = min(4, len(features))
    rows = -(-len(features) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, features, strict=False):
        feature = ds.schema.feature(name)
        for label, color in ((0, "#9bb7d4"), (1, "#d1605e")):
            values = ds.frame.loc[ds.frame[LABEL] == label, name].dropna()
            ax.hist(values, bins=bins, alpha=0.6, color=color, density=True, label=f"label {label}")
        ax.set_title(name + (f" [{feature.unit}]" if feature.unit else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(features):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{ds.schema.title}: feature distributions by label", fontsize=10)
    fig.tight_layout()
    return fig


def missing_values(names: tuple[str, ...]) -> Figure:
    """Share of missing values per feature, for the datasets that have any."""
    items = []
    for name in names:
        ds = load(name)
        share = ds.frame[ds.schema.feature_names].isna().mean()
        items += [(f"{name}: {col}", float(v)) for col, v in share.items() if v > 0]
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(items) + 1))
    if items:
        labels, values = zip(*items, strict=True)
        ax.barh(labels, values, color="#e3a857")
        ax.invert_yaxis()
    ax.set_xlabel("share of rows missing")
    ax.set_title("Missing values (after each dataset's missing-value rules)")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig
