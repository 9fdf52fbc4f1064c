"""Figures read at their saved size: annotations of at least 8 pt, no title over an axis label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import neuronmap as nm
from neuronmap.analyses.similarity import cka_heatmap
from neuronmap.testing import tiny_mlp, tiny_probe


def _drawn(fig: Figure) -> object:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_cka_heatmap_annotations_are_8pt_and_fit_their_cells() -> None:
    layers = [f"encoder.layer.{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    values = rng.uniform(0.3, 1.0, size=(12, 12))
    fig = cka_heatmap(pd.DataFrame((values + values.T) / 2, index=layers, columns=layers))
    renderer = _drawn(fig)
    ax = fig.axes[0]
    notes = [t for t in ax.texts if t.get_text().replace(".", "").isdigit()]
    assert len(notes) == 144
    assert min(t.get_fontsize() for t in notes) >= 8
    cell = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]  # pixels per column
    assert max(t.get_window_extent(renderer).width for t in notes) < cell
    assert min(label.get_fontsize() for label in ax.get_xticklabels()) >= 8


@pytest.fixture(scope="module")
def health_report() -> nm.Report:
    monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], reporters=[],
                           analyses=[nm.ActivationStats(), nm.NeuronStats(), nm.CKA()])
    return monitor.run(tiny_mlp(), step=0)


def test_suptitles_overlap_no_axis_title_or_label(health_report: nm.Report) -> None:
    checked = 0
    for result in health_report.results.values():
        for name, fig in result.figures.items():
            if fig._suptitle is None:
                continue
            renderer = _drawn(fig)
            top = fig._suptitle.get_window_extent(renderer)
            for ax in fig.axes:
                for text in (ax.title, ax.xaxis.label, ax.yaxis.label, *ax.get_yticklabels()):
                    if text.get_text():
                        assert not top.overlaps(text.get_window_extent(renderer)), (name, text.get_text())
                assert not top.overlaps(ax.get_window_extent(renderer)), name
            checked += 1
    assert checked >= 2  # activation_stats and neuron_stats both have one


def test_demo_shows_dead_fraction_and_effective_rank_once() -> None:
    from neuronmap.demo import default_analyses

    names = [type(a).__name__ for a in default_analyses()]
    assert "NeuronStats" in names and "ActivationStats" not in names
