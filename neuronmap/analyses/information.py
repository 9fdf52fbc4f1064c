"""Information: mutual information between each layer and the labels, and activation entropy.

Per layer, the activations are projected onto their top ``n_components`` principal components
(each standardised) and three quantities are estimated, in nats:

* **mi_knn**: ``I(Z; Y)`` between the joint component vector ``Z`` and the labels, with the
  k-nearest-neighbour estimator for a continuous and a discrete variable (Ross 2014, eq. 2;
  max-norm as in Kraskov et al. 2004). With one component it equals scikit-learn's
  :func:`~sklearn.feature_selection.mutual_info_classif`, which estimates each feature
  separately (its per-component values are in the ``components`` table). A permutation p-value
  (labels shuffled, distances reused) tests independence and is corrected across layers.
* **mi_binned**: the plug-in estimate on the top ``n_binned`` components cut into
  equal-frequency bins, with the Miller-Madow bias correction of each entropy,
  ``H_MM = H_plugin + (m - 1) / (2N)`` for ``m`` occupied bins and ``N`` examples (Miller 1955;
  Paninski 2003, eq. 3.6), so ``I_MM = I_plugin - (m_ZY - m_Z - m_Y + 1) / (2N)``.
  ``mi_binned_plugin`` is the uncorrected value (biased upwards by about that amount).
* **entropy**: the Miller-Madow entropy of each unit's activations in ``n_bins`` equal-width
  bins over its range, averaged over units (0 for a constant unit; at most ``log n_bins``), the
  per-unit binning of Shwartz-Ziv & Tishby (2017) without its joint histogram, which is
  undersampled in any realistic width (Saxe et al. 2018).

The estimators are in :mod:`neuronmap.metrics.information`, whose docstring lists the references in full.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.spatial.distance import cdist

from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval
from neuronmap.metrics.information import (
    entropy_plugin,
    mi_knn,
    mi_miller_madow,
    quantile_codes,
    top_components,
    unit_entropy,
)
from neuronmap.stats import adjust_pvalues, resolution_note

__all__ = ["Information"]


@register_analysis
class Information(Analysis):
    """Mutual information between each layer's top principal components and a label column.

    Args:
        target: Column holding the discrete labels.
        n_components: Principal components of each layer used for ``mi_knn``.
        n_neighbors: ``k`` of the nearest-neighbour estimator (Ross 2014 uses 3).
        n_binned: Leading components binned jointly for ``mi_binned``.
        n_bins: Bins per component (equal frequency) and per unit for ``entropy`` (equal width).
        n_permutations: Label permutations for the ``mi_knn`` p-value (0 disables it).
        max_examples: Larger probe sets are subsampled (seeded; at least 10, ``None``: every
            example); the estimator holds an ``n x n`` distance matrix and each permutation
            costs ``O(n^2)``.
        p_adjust: Correction across layers (:data:`neuronmap.stats.PVALUE_METHODS`).
        alpha: Significance level of the findings (corrected p below it) and of the note that
            says when ``n_permutations`` is too few to reach it.
        layers: Optional selectors restricting the analysis to some captured layers.

    Raises:
        InvalidParameterError: A parameter outside its allowed range.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.0"], analyses=[Information(n_permutations=19)],
        ...                        reporters=[])
        >>> monitor.run(tiny_mlp(), step=0).metrics["neuronmap/information/net.0/mi_knn"] > 0
        True
    """

    name = "information"
    probe_columns = ("target",)
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "target": [str],
        "n_components": [Interval(int, 1, None)],
        "n_neighbors": [Interval(int, 1, None)],
        "n_binned": [Interval(int, 1, None)],
        "n_bins": [Interval(int, 2, None)],
        "max_examples": [None, Interval(int, 10, None)],  # fewer leaves the k-NN estimator nothing to count
    }

    def __init__(
        self,
        target: str = "label",
        *,
        n_components: int = 10,
        n_neighbors: int = 3,
        n_binned: int = 1,
        n_bins: int = 8,
        n_permutations: int = 200,
        max_examples: int | None = 500,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
    ) -> None:
        super().__init__(layers=layers)
        self.target = target
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.n_binned = n_binned
        self.n_bins = n_bins
        self.n_permutations = n_permutations
        self.max_examples = max_examples
        self.p_adjust = p_adjust
        self.alpha = alpha

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        from sklearn.feature_selection import mutual_info_classif

        raw = ctx.probe.column(self.target)
        keep = np.flatnonzero(~pd.isna(raw))
        rng = np.random.default_rng([ctx.random_state, 3])
        notes = []
        if self.max_examples is not None and len(keep) > self.max_examples:
            keep = np.sort(rng.choice(keep, self.max_examples, replace=False))
            notes.append(f"A seeded random subset of {self.max_examples} examples was used.")
        y = pd.factorize(pd.Series(raw[keep]), sort=True)[0].astype(np.int64)
        counts = np.bincount(y)
        if counts.size < 2:
            return AnalysisResult(self.name, status="skipped",
                                  notes=(f"Column {self.target!r} has a single class; mutual information is 0.",))
        label_entropy = entropy_plugin(counts)
        rows, components = [], []
        items = self.layer_items(ctx)
        if not items:
            return AnalysisResult(self.name, status="skipped", notes=("No captured layer matches `layers`.",))
        for layer, acts in items:
            x = np.asarray(acts, dtype=np.float64).reshape(acts.shape[0], -1)[keep]
            if not np.isfinite(x).all():
                notes.append(f"{layer}: activations contain NaN or Inf; layer skipped.")
                continue
            z, explained = top_components(x, self.n_components, ctx.random_state)
            distances = cdist(z, z, metric="chebyshev")
            mi = mi_knn(distances, y, self.n_neighbors)
            p = np.nan
            if self.n_permutations:
                null = np.array([mi_knn(distances, rng.permutation(y), self.n_neighbors)
                                 for _ in range(self.n_permutations)])
                p = float((1 + np.count_nonzero(null >= mi - 1e-12)) / (1 + self.n_permutations))
            binned = quantile_codes(z[:, : self.n_binned], self.n_bins)
            rows.append({"layer": layer, "components": z.shape[1], "mi_knn": mi, "p": p,
                         "n_permutations": self.n_permutations,
                         "p_resolution": 1.0 / (self.n_permutations + 1) if self.n_permutations else np.nan,
                         "mi_binned": mi_miller_madow(binned, y),
                         "mi_binned_plugin": mi_miller_madow(binned, y, correction=False),
                         "entropy": unit_entropy(x, self.n_bins), "label_entropy": label_entropy})
            per_component = mutual_info_classif(z, y, n_neighbors=self.n_neighbors, random_state=ctx.random_state)
            components += [{"layer": layer, "component": k, "explained_variance_ratio": float(e),
                            "mi_sklearn": float(v)}
                           for k, (e, v) in enumerate(zip(explained, per_component, strict=True))]
        table = pd.DataFrame(rows, columns=["layer", "components", "mi_knn", "p", "n_permutations", "p_resolution",
                                            "mi_binned", "mi_binned_plugin", "entropy", "label_entropy"])
        table["p_adj"] = adjust_pvalues(table["p"].to_numpy(dtype=float), method=self.p_adjust, alpha=self.alpha)
        note = resolution_note(self.n_permutations, len(table), alpha=self.alpha, what="layers")
        if note:
            notes.append(note)
        metrics = MetricSet()
        for r in table.to_dict(orient="records"):
            tested = np.isfinite(r["p"])
            metrics.add(r["layer"], "mi_knn", r["mi_knn"], p=r["p"] if tested else None,
                        p_adj=r["p_adj"] if tested else None)
            for key in ("mi_binned", "mi_binned_plugin", "entropy"):
                metrics.add(r["layer"], key, r[key])
        return AnalysisResult(self.name, metrics=metrics, figures={"information": _figure(table, label_entropy)},
                              tables={"information": table, "components": pd.DataFrame(components)},
                              notes=tuple(notes))


def _figure(table: pd.DataFrame, label_entropy: float) -> Figure:
    fig = Figure(figsize=(8, 3), layout="constrained")
    left, right = fig.subplots(1, 2)
    x = np.arange(len(table))
    left.plot(x, table["mi_knn"], marker="o", label="k-NN (Ross 2014)")
    left.plot(x, table["mi_binned"], marker="s", ls="--", label="binned, Miller-Madow")
    left.axhline(label_entropy, color="#555", ls=":", lw=1, label="H(Y), the upper bound")
    left.set_ylabel("I(layer; Y) [nats]")
    left.legend(fontsize=7)
    right.bar(x, table["entropy"], color="#9db4d0")
    right.set_ylabel("mean unit entropy [nats]")
    for ax in (left, right):
        ax.set_xticks(x, table["layer"], rotation=60, ha="right", fontsize=7)
    fig.suptitle("Information by layer", fontsize=9)
    return fig

