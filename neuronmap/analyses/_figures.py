"""Figures shared by the mechanistic analyses (matplotlib ``Figure`` objects, no pyplot)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def short_labels(names: Sequence[str]) -> list[str]:
    """Tick labels without the dotted prefix every name shares (``bert.encoder.`` ...)."""
    parts = [str(n).split(".") for n in names]
    common = 0
    while len(parts) > 1 and all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return [".".join(p[common:]) for p in parts]


def heatmap_figure(data: pd.DataFrame, *, title: str, label: str) -> Figure:
    """A rows x positions heatmap (layers or nodes down, token positions across), centred on 0."""
    fig = Figure(figsize=(1.2 + 0.45 * max(4, data.shape[1]), 1.2 + 0.32 * max(3, data.shape[0])))
    ax = fig.subplots()
    values = data.to_numpy(dtype=float)
    bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
    ax.set_yticks(range(len(data.index)), short_labels([str(i) for i in data.index]), fontsize=6)
    ax.set_xticks(range(len(data.columns)), [str(c) for c in data.columns], fontsize=6)
    ax.set_xlabel("token position")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
