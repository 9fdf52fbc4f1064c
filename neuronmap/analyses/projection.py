"""Projection: 2-D maps of each layer (PCA, t-SNE, UMAP) coloured by label and sensitive group.

These figures are for looking, not for claims: distances and cluster sizes in t-SNE and UMAP
maps are not faithful (Wattenberg, Viégas & Johnson 2016), so the only metric is the variance
the two principal components explain. Colouring by each sensitive group shows at a glance
whether a layer separates examples by, say, gender as well as by label.

* PCA: :class:`sklearn.decomposition.PCA` (Pearson 1901).
* t-SNE: :class:`sklearn.manifold.TSNE` (van der Maaten & Hinton 2008) on the top 50 principal
  components, the preprocessing of the original paper, with PCA initialisation (Kobak &
  Berens 2019) and the perplexity capped below ``n / 3``.
* UMAP: ``umap.UMAP`` (McInnes, Healy & Melville 2018), from the optional ``viz`` extra; when it
  is missing the figure is skipped with a note naming the install command.

References:
    van der Maaten & Hinton (2008). Visualizing Data using t-SNE. JMLR 9.
    Kobak & Berens (2019). The art of using t-SNE for single-cell transcriptomics. Nat. Commun. 10.
    McInnes, Healy & Melville (2018). UMAP: Uniform Manifold Approximation and Projection.
    arXiv:1802.03426.
    Wattenberg, Viégas & Johnson (2016). How to Use t-SNE Effectively. Distill.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from neuronmap._imports import UMAP_AVAILABLE
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Constraint, Interval, Type

__all__ = ["Projection"]

Method = Literal["pca", "tsne", "umap"]
_METHODS = ("pca", "tsne", "umap")
# Columns with at most this many distinct values (or non-numeric ones) get a legend, not a colour bar.
_MAX_CATEGORIES = 20


class _Methods(Constraint):
    """A method name or a non-empty list of them."""

    def __call__(self, value: Any) -> bool:
        names = [value] if isinstance(value, str) else value
        return isinstance(names, (list, tuple)) and bool(names) and all(m in _METHODS for m in names)

    def __str__(self) -> str:
        return f"a non-empty subset of {list(_METHODS)}"


@register_analysis
class Projection(Analysis):
    """2-D PCA, t-SNE and UMAP figures of each layer, one panel per colouring column.

    Figures are named ``<method>/<layer>`` (e.g. ``tsne/encoder.layer.3``).

    Args:
        methods: Any of ``"pca"``, ``"tsne"``, ``"umap"``.
        color_by: Probe-set columns to colour by; ``None`` uses the labels and every group column.
        max_examples: Larger probe sets are subsampled (seeded) to this many points (at least 10;
            ``None``: every example). Formerly ``max_points``, which still works and warns.
        perplexity: t-SNE perplexity (capped at ``(n - 1) / 3``).
        n_neighbors: UMAP neighbourhood size (capped at ``n - 1``).
        layers: Optional selectors restricting the analysis to some captured layers.

    Raises:
        InvalidParameterError: Unknown method, or a bad count.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.0"], analyses=[Projection(methods=["pca"])],
        ...                        reporters=[])
        >>> sorted(monitor.run(tiny_mlp(), step=0).results["projection"].figures)
        ['pca/net.0']
    """

    name = "projection"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "methods": [_Methods()],
        "color_by": [None, Type(str, list, tuple, label="a column name or a list of them")],
        "max_examples": [None, Interval(int, 10, None)],  # a 2-D map of fewer points shows nothing
        "perplexity": [Interval(float, 0, None, closed="neither")],
        "n_neighbors": [Interval(int, 2, None)],
    }
    _renamed_parameters: ClassVar[dict[str, str]] = {"max_points": "max_examples"}

    def __init__(
        self,
        *,
        methods: Sequence[Method] | Method = ("pca", "tsne", "umap"),
        color_by: Sequence[str] | str | None = None,
        max_examples: int | None = 2000,
        perplexity: float = 30.0,
        n_neighbors: int = 15,
        layers: str | list[str] | None = None,
    ) -> None:
        super().__init__(layers=layers)
        self.methods = methods
        self.color_by = color_by
        self.max_examples = max_examples
        self.perplexity = perplexity
        self.n_neighbors = n_neighbors

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        probe = ctx.probe
        columns = _names(self.color_by)
        if columns is None:
            columns = (["label"] if probe.has_labels else []) + list(probe.group_columns)
        rows = np.arange(len(probe))
        notes: list[str] = []
        if self.max_examples is not None and len(rows) > self.max_examples:
            rng = np.random.default_rng([ctx.random_state, 4])
            rows = np.sort(rng.choice(rows, self.max_examples, replace=False))
            notes.append(f"A seeded random subset of {self.max_examples} of {len(probe)} examples is shown.")
        colours = {c: probe.column(c)[rows] for c in columns}
        methods = _names(self.methods) or []
        if "umap" in methods and not UMAP_AVAILABLE:
            methods.remove("umap")
            notes.append(f"UMAP figures skipped: {UMAP_AVAILABLE}")
        items = self.layer_items(ctx)
        if not items:
            return AnalysisResult(self.name, status="skipped", notes=("No captured layer matches `layers`.",))
        metrics = MetricSet()
        figures: dict[str, Figure] = {}
        for layer, acts in items:
            x = np.asarray(acts, dtype=np.float64).reshape(acts.shape[0], -1)[rows]
            if not np.isfinite(x).all():
                notes.append(f"{layer}: activations contain NaN or Inf; layer skipped.")
                continue
            if len(x) < 4 or np.ptp(x, axis=0).max() == 0:
                notes.append(f"{layer}: fewer than 4 examples or constant activations; nothing to project.")
                continue
            for method in methods:
                embedding, explained = self._embed(method, x, ctx.random_state)
                if method == "pca":
                    metrics.add(layer, "pca_explained_variance", float(explained))
                title = f"{layer}: {method.upper() if method != 'tsne' else 't-SNE'}"
                if method == "pca":
                    title += f" ({explained:.0%} of variance)"
                figures[f"{method}/{layer}"] = _scatter(embedding, colours, title=title)
        return AnalysisResult(self.name, metrics=metrics, figures=figures, notes=tuple(notes))

    def _embed(self, method: str, x: NDArray[np.float64], seed: int) -> tuple[NDArray[np.float64], float]:
        """2-D coordinates of ``x`` and (for PCA) the fraction of variance they explain."""
        from sklearn.decomposition import PCA

        n = len(x)
        if method == "pca":
            pca = PCA(n_components=min(2, x.shape[1]), random_state=seed).fit(x)
            return _two_columns(pca.transform(x)), float(pca.explained_variance_ratio_.sum())
        if method == "tsne":
            from sklearn.manifold import TSNE

            reduced = PCA(n_components=min(50, n - 1, x.shape[1]), random_state=seed).fit_transform(x)
            perplexity = min(self.perplexity, (n - 1) / 3.0)
            tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
            return _two_columns(tsne.fit_transform(reduced)), float("nan")
        umap = UMAP_AVAILABLE.require("Projection(methods=['umap'])")
        # a seeded UMAP runs on one thread anyway; saying so avoids its warning
        reducer = umap.UMAP(n_components=2, n_neighbors=min(self.n_neighbors, n - 1), random_state=seed, n_jobs=1)
        return _two_columns(np.asarray(reducer.fit_transform(x), dtype=np.float64)), float("nan")


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    """A name or a sequence of names as a list (``None`` stays ``None``)."""
    return None if value is None else [value] if isinstance(value, str) else list(value)


def _two_columns(embedding: NDArray[np.float64]) -> NDArray[np.float64]:
    """Pad a one-column embedding (a one-unit layer) with zeros."""
    return embedding if embedding.shape[1] == 2 else np.column_stack([embedding[:, 0], np.zeros(len(embedding))])


def _scatter(embedding: NDArray[np.float64], colours: dict[str, NDArray[Any]], *, title: str) -> Figure:
    panels = list(colours.items()) or [("", np.zeros(len(embedding)))]
    fig = Figure(figsize=(3.6 * len(panels), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (column, values) in zip(axes, panels, strict=True):
        series = pd.Series(values)
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        if column and numeric and series.nunique() > _MAX_CATEGORIES:
            points = ax.scatter(embedding[:, 0], embedding[:, 1], c=series.to_numpy(dtype=float), s=8, cmap="viridis")
            fig.colorbar(points, ax=ax, fraction=0.046, pad=0.04)
        else:
            labels = series.astype(str).where(series.notna(), "missing")
            categories = sorted(labels.unique())
            shown = categories[:_MAX_CATEGORIES]
            if len(categories) > _MAX_CATEGORIES:  # the long tail in grey rather than dropped
                rest = (~labels.isin(shown)).to_numpy()
                ax.scatter(embedding[rest, 0], embedding[rest, 1], s=6, color="#bbb", label="other")
            for k, category in enumerate(shown):
                mask = (labels == category).to_numpy()
                ax.scatter(embedding[mask, 0], embedding[mask, 1], s=8, color=f"C{k % 10}", label=category,
                           marker="o" if k < 10 else "^", alpha=0.8)
            if column:
                ax.legend(fontsize=6, title=column, title_fontsize=7, markerscale=1.5, loc="best")
        ax.set_title(f"coloured by {column}" if column else "", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return fig
