"""Pictures a learner would rather look at than a table. Each function returns its Figure."""

from __future__ import annotations

from collections.abc import Mapping

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


# The two gold classes in every plot of this module: label 0 blue, label 1 red.
CLASS_COLORS = ((0, "#9bb7d4"), (1, "#d1605e"))


def _missing_note(n_missing: int) -> str:
    return f", {n_missing} missing" if n_missing else ""


def probability_histograms(readings: Mapping[str, object], labels: object, bins: int = 20) -> Figure:
    """One panel per reading (e.g. "hard", "verbalized", "token"): the histogram of its probabilities
    on [0, 1], stacked by gold label. Missing values (NaN) are left out and counted in the title.

    A well-separating reading puts the red bars right and the blue bars left; a coarse one (a few
    verbalized numbers) shows a few tall bars.
    """
    y = np.asarray(labels, dtype=int).ravel()
    fig, axes = plt.subplots(1, len(readings), figsize=(3.2 * len(readings), 2.8), squeeze=False,
                             sharey=True)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for ax, (name, values) in zip(axes.flat, readings.items(), strict=True):
        p = np.asarray(values, dtype=float).ravel()
        if p.shape != y.shape:
            raise ValueError(f"{name}: {p.size} values for {y.size} labels")
        keep = ~np.isnan(p)
        ax.hist([p[keep & (y == c)] for c, _ in CLASS_COLORS], bins=edges, stacked=True,
                color=[color for _, color in CLASS_COLORS], label=[f"label {c}" for c, _ in CLASS_COLORS])
        ax.set_title(f"{name} (n {int(keep.sum())}{_missing_note(int((~keep).sum()))})", fontsize=9)
        ax.set_xlabel("P(label 1)")
    axes.flat[0].set_ylabel("records")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def probability_scatter(x: object, y: object, labels: object, x_label: str, y_label: str, *,
                        jitter: float = 0.0, seed: int = 0) -> Figure:
    """Two readings of the same records against each other, one dot per record, coloured by gold
    label, with the diagonal (the two agree) and the 0.5 lines (the two decide alike).

    jitter: a small uniform shift in both directions (drawn from `seed`, so the picture is the same
    on every run) that spreads dots stacked on the few values a verbalized answer takes.
    Records where either reading is missing are left out and counted in the title.
    """
    a, b = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    gold = np.asarray(labels, dtype=int).ravel()
    if not a.shape == b.shape == gold.shape:
        raise ValueError(f"x, y and labels must have one value per record: {a.size}, {b.size}, {gold.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    shift = np.random.default_rng(seed).uniform(-jitter, jitter, size=(2, a.size))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="the two agree")
    ax.axhline(0.5, c="grey", lw=0.5)
    ax.axvline(0.5, c="grey", lw=0.5)
    for c, color in CLASS_COLORS:
        rows = keep & (gold == c)
        ax.scatter(a[rows] + shift[0, rows], b[rows] + shift[1, rows], s=14, alpha=0.6, c=color,
                   label=f"label {c}")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(f"{int(keep.sum())} records{_missing_note(int((~keep).sum()))}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def serval_loop() -> Figure:
    """The SERVAL loop as a diagram (lesson 05): the LLM annotates, a vertical model learns the
    soft labels from scratch, its probabilities back-tune the LLM, and again."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.set(xlim=(0, 10), ylim=(0, 4))
    ax.axis("off")
    boxes = ((1.6, "#fde2e2", "#c0392b", "LLM  $\\theta_k$\nknows the domain,\nimperfectly"),
             (8.4, "#dfeefb", "#2471a3", "vertical model  $f_\\phi$\nfrom scratch,\non the LLM's labels"))
    for x, face, edge, text in boxes:
        ax.text(x, 2, text, ha="center", va="center", fontsize=10,
                bbox={"boxstyle": "round,pad=0.6", "facecolor": face, "edgecolor": edge, "linewidth": 1.5})
    arrow = {"arrowstyle": "-|>", "lw": 1.5, "color": "#333", "mutation_scale": 15,
             "connectionstyle": "arc3,rad=-0.35"}
    ax.annotate("", xy=(7.35, 2.35), xytext=(2.65, 2.35), arrowprops=arrow)  # annotate
    ax.annotate("", xy=(2.65, 1.65), xytext=(7.35, 1.65), arrowprops=arrow)  # back-tune
    steps = (
        (5, 3.75, "1. annotate the unlabeled rows: $\\tilde y_i = P_{\\theta_k}(\\mathrm{Yes} \\mid x_i)$"),
        (8.4, 0.55, "2. learn from noisy labels:\n"
                    "$\\min_\\phi \\sum_i \\mathrm{BCE}(f_\\phi(x_i), \\tilde y_i)$"),
        (5, 0.1, "3. back-tune (LoRA) on every row's soft answer $t_i = f_\\phi(x_i)$: "
                 "$\\theta_k \\to \\theta_{k+1}$"),
        (1.6, 0.55, "4. repeat; gold labels\nfor evaluation only"),
    )
    for x, y, text in steps:
        ax.text(x, y, text, ha="center", fontsize=10)
    fig.tight_layout()
    return fig
