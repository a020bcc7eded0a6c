"""Plots of labkit.plots: what is drawn, counted and left out (checked on the figure's artists)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from labkit import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_probability_histograms_stack_each_class_and_count_missing_values() -> None:
    labels = [0, 0, 1, 1, 1]
    fig = plots.probability_histograms(
        {"hard": [0.0, 1.0, 1.0, 1.0, np.nan], "token": [0.1, 0.35, 0.62, 0.9, 0.97]}, labels, bins=10)
    hard, token = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["hard (n 4, 1 missing)", "token (n 5)"]
    # stacked bars: the second class's bars start on top of the first's; heights are counts
    blue, red = (np.array([p.get_height() for p in c.patches]) for c in token.containers)
    assert blue.sum() == 2 and red.sum() == 3
    assert blue[1] == 1 and blue[3] == 1 and red[6] == 1 and red[9] == 2  # 0.1, 0.35 | 0.62, 0.9, 0.97
    blue, red = (np.array([p.get_height() for p in c.patches]) for c in hard.containers)
    assert (blue.sum(), red.sum()) == (2, 2)  # the NaN (a label-1 row) is not drawn
    with pytest.raises(ValueError, match="token: 2 values for 5 labels"):
        plots.probability_histograms({"token": [0.1, 0.2]}, labels)


def test_probability_scatter_leaves_out_missing_rows_and_jitters_the_same_way_each_time() -> None:
    x = [0.2, 0.8, 0.6, np.nan]
    y = [0.65, 0.97, 0.65, 0.5]
    labels = [0, 1, 1, 0]
    fig = plots.probability_scatter(x, y, labels, "token P(Yes)", "verbalized")
    ax = fig.axes[0]
    assert ax.get_title() == "3 records, 1 missing"
    negatives, positives = (c.get_offsets() for c in ax.collections)
    np.testing.assert_allclose(negatives, [[0.2, 0.65]])
    np.testing.assert_allclose(positives, [[0.8, 0.97], [0.6, 0.65]])
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("token P(Yes)", "verbalized")

    def jittered(seed: int) -> np.ndarray:
        figure = plots.probability_scatter(x, y, labels, "a", "b", jitter=0.02, seed=seed)
        return np.vstack([c.get_offsets() for c in figure.axes[0].collections])

    first = jittered(0)
    np.testing.assert_array_equal(first, jittered(0))  # same seed, same picture
    assert not np.array_equal(first, jittered(1))
    assert np.abs(first - np.array([[0.2, 0.65], [0.8, 0.97], [0.6, 0.65]])).max() <= 0.02
    with pytest.raises(ValueError, match="one value per record"):
        plots.probability_scatter([0.1], [0.2, 0.3], [1], "a", "b")


def test_serval_loop_diagram_names_the_four_steps_in_order() -> None:
    figure = plots.serval_loop()
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert [t[:2] for t in texts if t[:2] in ("1.", "2.", "3.", "4.")] == ["1.", "2.", "3.", "4."]
    assert any("LLM" in t for t in texts) and any("vertical model" in t for t in texts)
    plt.close(figure)
