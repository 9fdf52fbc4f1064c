"""NeuronStats: unit health (dead, saturated, outlier dimensions) and class-selective neurons.

Per layer, over the probe set (``a_ij`` is unit ``j`` on example ``i``):

* **dead_fraction**: units with ``max_i a_ij <= dead_threshold`` (Lu et al. 2019).
* **saturated_fraction**, for layers whose module is a bounded activation (``Tanh``, ``Sigmoid``,
  ``Hardtanh``, ``ReLU6``, ``Hardsigmoid``, ``Softsign``) or given ``bounds``: units that sit
  within ``saturation_tol`` of the range of a bound on more than ``saturation_fraction`` of the
  examples, where their gradient vanishes (Glorot & Bengio 2010, Sec. 3.1; Rakitianskaia &
  Engelbrecht 2015). Unbounded layers have no such metric; their pathology is the next one.
* **outlier_dims**: dimensions whose mean magnitude ``m_j = mean_i |a_ij|`` lies more than
  ``outlier_sigma`` standard deviations above the mean over dimensions — the 3-sigma criterion
  of Kovaleva et al. (2021) applied to activations as in Puccetti et al. (2022).
* **kurtosis**: excess kurtosis of each example's activation vector across dimensions,
  averaged over examples; 0 for Gaussian-like, large when a few dimensions dominate
  (Bondarenko et al. 2021; Elhage et al. 2023).
* **sparsity** and **effective_rank** (participation ratio): see :mod:`neuronmap.metrics.neurons`.
* **selective_fraction** / **max_selectivity**: per neuron, a class-selectivity index and a
  test of "the activation distribution is the same in every class" (Kruskal-Wallis by default,
  robust to the zeros of ReLU units), corrected across the layer's neurons (Benjamini-Hochberg
  by default). The index is Morcos et al. (2018, eq. 1)
  ``(mu_max - mu_rest) / (mu_max + mu_rest)`` for non-negative layers, where ``mu_max`` is the
  largest class mean and ``mu_rest`` the mean of the other class means, and the d'-style
  ``(mu_max - mu_rest) / sqrt((s_max^2 + s_rest^2) / 2)`` otherwise (``s_rest`` over the
  examples of the other classes; Green & Swets 1966).

References:
    Lu, Shin, Su & Karniadakis (2019). Dying ReLU and Initialization. arXiv:1903.06733.
    Glorot & Bengio (2010). Understanding the difficulty of training deep feedforward networks.
    AISTATS.
    Rakitianskaia & Engelbrecht (2015). Measuring saturation in neural networks. IEEE SSCI.
    Kovaleva, Kulshreshtha, Rogers & Rumshisky (2021). BERT Busters: Outlier Dimensions that
    Disrupt Transformers. Findings of ACL.
    Puccetti, Rogers, Drozd & Dell'Orletta (2022). Outlier Dimensions that Disrupt Transformers
    are Driven by Frequency. Findings of EMNLP.
    Bondarenko, Nagel & Blankevoort (2021). Understanding and Overcoming the Challenges of
    Efficient Transformer Quantization. EMNLP.
    Elhage et al. (2023). Privileged Bases in the Transformer Residual Stream. Transformer
    Circuits Thread.
    Morcos, Barrett, Rabinowitz & Botvinick (2018). On the importance of single directions for
    generalization. ICLR.
    Kruskal & Wallis (1952). Use of ranks in one-criterion variance analysis. JASA 47(260).
    Benjamini & Hochberg (1995). Controlling the false discovery rate. JRSS B 57(1).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.stats
from matplotlib.figure import Figure
from numpy.typing import NDArray
from torch import nn

from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Constraint, Interval, Options
from neuronmap.findings import Finding
from neuronmap.metrics.neurons import dead_fraction, participation_ratio, sparsity
from neuronmap.stats import adjust_pvalues

__all__ = ["NeuronStats"]

SelectivityKind = Literal["auto", "index", "dprime"]
Test = Literal["kruskal", "anova"]
_SELECTIVITY = ("auto", "index", "dprime")
_TESTS = ("kruskal", "anova")
_BOUNDED: dict[type[nn.Module], tuple[float, float]] = {
    nn.Tanh: (-1.0, 1.0),
    nn.Sigmoid: (0.0, 1.0),
    nn.Hardsigmoid: (0.0, 1.0),
    nn.Softsign: (-1.0, 1.0),
    nn.ReLU6: (0.0, 6.0),
}


class _Range(Constraint):
    """A ``(low, high)`` pair of real numbers with ``low < high``."""

    def __call__(self, value: Any) -> bool:
        number = Interval(float, None, None)
        return (isinstance(value, (tuple, list)) and len(value) == 2 and all(number(v) for v in value)
                and value[0] < value[1])

    def __str__(self) -> str:
        return "a (low, high) pair of floats with low < high"


@register_analysis
class NeuronStats(Analysis):
    """Dead, saturated and outlier units, kurtosis, effective rank and class-selective neurons.

    Args:
        target: Column whose classes define selectivity; ``None`` skips selectivity.
        dead_threshold: A unit is active on an example when it exceeds this value.
        saturation_tol: Distance to a bound, as a fraction of the range, that counts as "at the
            bound".
        saturation_fraction: A unit is saturated when at a bound on more than this fraction of
            examples.
        bounds: ``(low, high)`` for every layer, overriding the module-type lookup.
        outlier_sigma: Standard deviations above the mean magnitude that make an outlier dim.
        selectivity: ``"auto"`` (the Morcos index for non-negative layers, d' otherwise),
            ``"index"`` or ``"dprime"``.
        test: Per-neuron test across classes: ``"kruskal"`` (Kruskal-Wallis H) or ``"anova"``
            (one-way F test).
        top_k: Most selective neurons per layer in the ``selective_neurons`` table.
        p_adjust: Correction across a layer's neurons (:data:`neuronmap.stats.PVALUE_METHODS`).
        alpha: Level for "selective" (corrected p below it).
        layers: Optional selectors restricting the analysis to some captured layers.

    Raises:
        InvalidParameterError: A parameter outside its allowed set or range.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.1"], analyses=[NeuronStats()], reporters=[])
        >>> 0 <= monitor.run(tiny_mlp(), step=0).metrics["neuronmap/neuron_stats/net.1/dead_fraction"] <= 1
        True
    """

    name = "neuron_stats"
    probe_columns = ("target",)
    headline_metrics = ("dead_fraction", "saturated_fraction", "outlier_dims", "selective_fraction")
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "target": [None, str],
        "dead_threshold": [Interval(float, None, None)],
        "saturation_tol": [Interval(float, 0, 1, closed="neither")],
        "saturation_fraction": [Interval(float, 0, 1, closed="neither")],
        "bounds": [None, _Range()],
        "outlier_sigma": [Interval(float, 0, None, closed="neither")],
        "selectivity": [Options(_SELECTIVITY)],
        "test": [Options(_TESTS)],
    }

    def findings(self, result: AnalysisResult) -> list[Finding]:
        """See :func:`neuronmap.analyses._findings.neuron_findings`."""
        from neuronmap.analyses._findings import neuron_findings

        return neuron_findings(result)

    def __init__(
        self,
        target: str | None = "label",
        *,
        dead_threshold: float = 0.0,
        saturation_tol: float = 0.01,
        saturation_fraction: float = 0.9,
        bounds: tuple[float, float] | None = None,
        outlier_sigma: float = 3.0,
        selectivity: SelectivityKind = "auto",
        test: Test = "kruskal",
        top_k: int = 10,
        p_adjust: str = "fdr_bh",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
    ) -> None:
        super().__init__(layers=layers)
        self.target = target
        self.dead_threshold = dead_threshold
        self.saturation_tol = saturation_tol
        self.saturation_fraction = saturation_fraction
        self.bounds = bounds
        self.outlier_sigma = outlier_sigma
        self.selectivity = selectivity
        self.test = test
        self.top_k = top_k
        self.p_adjust = p_adjust
        self.alpha = alpha

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        y, notes = self._classes(ctx)
        metrics = MetricSet()
        summary, selective, outliers = [], [], []
        items = self.layer_items(ctx)
        if not items:
            return AnalysisResult(self.name, status="skipped", notes=("No captured layer matches `layers`.",))
        for layer, acts in items:
            x = np.asarray(acts, dtype=np.float64).reshape(acts.shape[0], -1)
            if not np.isfinite(x).all():
                notes.append(f"{layer}: activations contain NaN or Inf; layer skipped.")
                continue
            row: dict[str, Any] = {
                "dead_fraction": dead_fraction(x, threshold=self.dead_threshold),
                "sparsity": sparsity(x),
                "kurtosis": _mean_kurtosis(x),
                "effective_rank": participation_ratio(x),
            }
            bounds = (_module_bounds(ctx.model, layer) if self.bounds is None
                      else (float(self.bounds[0]), float(self.bounds[1])))
            if bounds is not None and x.min() >= bounds[0] - 1e-6 and x.max() <= bounds[1] + 1e-6:
                row["saturated_fraction"] = _saturated_fraction(x, bounds, self.saturation_tol,
                                                                self.saturation_fraction)
            dims, z = _outlier_dims(x, self.outlier_sigma)
            row["outlier_dims"] = float(dims.size)
            outliers += [{"layer": layer, "dim": int(d), "mean_abs": float(np.abs(x[:, d]).mean()),
                          "z": float(z[d])} for d in dims]
            if y is not None:
                table = self._selectivity(x, y)
                row["selective_fraction"] = float((table["p_adj"] < self.alpha).mean())
                row["max_selectivity"] = float(np.nanmax(table["selectivity"])) if table["selectivity"].notna().any() \
                    else float("nan")
                top = table.sort_values("selectivity", ascending=False, na_position="last").head(self.top_k)
                selective.append(top.assign(layer=layer))
            for key, value in row.items():
                metrics.add(layer, key, value)
            summary.append({"layer": layer, "units": x.shape[1], **row})
        tables = {"summary": pd.DataFrame(summary),
                  "outlier_dims": pd.DataFrame(outliers, columns=["layer", "dim", "mean_abs", "z"])}
        if selective:
            columns = ["layer", "neuron", "preferred_class", "selectivity", "statistic", "p", "p_adj"]
            tables["selective_neurons"] = pd.concat(selective, ignore_index=True)[columns]
        return AnalysisResult(self.name, metrics=metrics, tables=tables,
                              figures={"neurons": _figure(tables["summary"])}, notes=tuple(notes))

    def _classes(self, ctx: AnalysisContext) -> tuple[tuple[NDArray[np.int64], list[Any]] | None, list[str]]:
        if self.target is None:
            return None, []
        raw = ctx.probe.column(self.target)
        if pd.isna(raw).any():
            return None, [f"Column {self.target!r} has missing values; class selectivity skipped."]
        codes, classes = pd.factorize(pd.Series(raw), sort=True)
        counts = np.bincount(codes)
        if len(classes) < 2 or counts.min() < 2:
            return None, [f"Class selectivity needs at least 2 classes with 2 examples each; "
                          f"{self.target!r} has counts {dict(zip(map(str, classes), counts.tolist(), strict=True))}."]
        return (codes.astype(np.int64), list(classes)), []

    def _selectivity(self, x: NDArray[np.float64], y: tuple[NDArray[np.int64], list[Any]]) -> pd.DataFrame:
        codes, classes = y
        groups = [x[codes == k] for k in range(len(classes))]
        means = np.stack([g.mean(axis=0) for g in groups])  # [K, d]
        best = np.argmax(means, axis=0)
        cols = np.arange(x.shape[1])
        mu_max = means[best, cols]
        kind = self.selectivity if self.selectivity != "auto" else ("index" if x.min() >= 0 else "dprime")
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "index":
                mu_rest = (means.sum(axis=0) - mu_max) / (len(classes) - 1)
                index = (mu_max - mu_rest) / (mu_max + mu_rest)
            else:
                rest = codes[:, None] != best[None, :]  # [n, d]: examples outside each unit's class
                mu_rest = np.sum(x * rest, axis=0) / rest.sum(axis=0)
                var_rest = np.sum(rest * (x - mu_rest) ** 2, axis=0) / (rest.sum(axis=0) - 1)
                var_max = np.stack([g.var(axis=0, ddof=1) for g in groups])[best, cols]
                index = (mu_max - mu_rest) / np.sqrt((var_max + var_rest) / 2.0)
        statistic, p = np.full(x.shape[1], np.nan), np.full(x.shape[1], np.nan)
        varying = np.ptp(x, axis=0) > 0  # a constant unit has no test; it stays NaN and uncounted
        if varying.any():
            test = scipy.stats.kruskal if self.test == "kruskal" else scipy.stats.f_oneway
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # constant within every class: NaN
                res = test(*[g[:, varying] for g in groups], axis=0)
            statistic[varying], p[varying] = res.statistic, res.pvalue
        return pd.DataFrame({
            "neuron": cols,
            "preferred_class": [classes[k] for k in best],
            "selectivity": np.where(np.isfinite(index), index, np.nan),
            "statistic": statistic,
            "p": p,
            "p_adj": adjust_pvalues(p, method=self.p_adjust, alpha=self.alpha),
        })


def _module_bounds(model: nn.Module, layer: str) -> tuple[float, float] | None:
    """Output range of the module named ``layer`` when it is a bounded activation."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        return None
    if isinstance(module, nn.Hardtanh) and not isinstance(module, nn.ReLU6):
        return float(module.min_val), float(module.max_val)
    for kind, bounds in _BOUNDED.items():
        if isinstance(module, kind):
            return bounds
    return None


def _saturated_fraction(x: NDArray[np.float64], bounds: tuple[float, float], tol: float, fraction: float) -> float:
    """Fraction of units at a bound (within ``tol`` of the range) on more than ``fraction`` of examples."""
    low, high = bounds
    margin = tol * (high - low)
    at_bound = (x <= low + margin) | (x >= high - margin)
    return float((at_bound.mean(axis=0) > fraction).mean())


def _outlier_dims(x: NDArray[np.float64], sigma: float) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Dimensions whose mean magnitude exceeds the mean over dims by ``sigma`` standard deviations."""
    magnitude = np.abs(x).mean(axis=0)
    spread = magnitude.std()
    if x.shape[1] < 3 or spread == 0:
        return np.empty(0, dtype=np.intp), np.zeros_like(magnitude)
    z = (magnitude - magnitude.mean()) / spread
    return np.flatnonzero(z > sigma), z


def _mean_kurtosis(x: NDArray[np.float64]) -> float:
    """Excess kurtosis across dimensions, averaged over examples (constant rows left out)."""
    rows = x[np.ptp(x, axis=1) > 0]
    if x.shape[1] < 4 or not len(rows):
        return float("nan")
    return float(np.mean(scipy.stats.kurtosis(rows, axis=1, fisher=True, bias=True)))


def _figure(summary: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(10, 3), layout="constrained")
    axes = fig.subplots(1, 3)
    x = np.arange(len(summary))
    layers = summary["layer"] if len(summary) else []
    width = 0.4
    axes[0].bar(x - width / 2, summary.get("dead_fraction", pd.Series(dtype=float)), width, color="#b3261e",
                label="dead")
    saturated = summary["saturated_fraction"] if "saturated_fraction" in summary else pd.Series(np.nan, index=x)
    axes[0].bar(x + width / 2, saturated.fillna(0.0), width, color="#e8a317", label="saturated")
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("fraction of units")
    axes[0].legend(fontsize=7)
    axes[1].plot(x, summary.get("kurtosis", pd.Series(dtype=float)), marker="o", label="excess kurtosis")
    axes[1].bar(x, summary.get("outlier_dims", pd.Series(dtype=float)), color="#9db4d0", label="outlier dims")
    axes[1].legend(fontsize=7)
    if "selective_fraction" in summary:
        axes[2].bar(x, summary["selective_fraction"], color="#1f5fa8")
    axes[2].set_ylim(0, 1)
    axes[2].set_ylabel("class-selective units (corrected)")
    for ax in axes:
        ax.set_xticks(x, layers, rotation=60, ha="right", fontsize=7)
    fig.suptitle("Neuron health and selectivity by layer", fontsize=9)
    return fig
