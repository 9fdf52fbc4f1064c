"""ActivationStats: the health of every monitored layer at a glance."""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd
from matplotlib.figure import Figure

from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval
from neuronmap.findings import Finding
from neuronmap.metrics.neurons import activation_summary

__all__ = ["ActivationStats"]


@register_analysis
class ActivationStats(Analysis):
    """Per layer: mean, std, dead-unit fraction, non-finite fraction, sparsity, effective rank.

    See :mod:`neuronmap.metrics.neurons` for definitions and references.

    Args:
        dead_threshold: A unit counts as active on an example when it exceeds this value.
        eps: Magnitude at or below which an entry counts as zero for sparsity.
        layers: Optional selectors restricting the analysis to some captured layers.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[ActivationStats()], reporters=[])
        >>> report = monitor.run(tiny_mlp(), step=0)
        >>> 0.0 <= report.metrics["neuronmap/activation_stats/net.1/dead_fraction"] <= 1.0
        True
    """

    name = "activation_stats"
    headline_metrics = ("std", "sparsity", "effective_rank", "nonfinite_fraction")
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "dead_threshold": [Interval(float, None, None)],
        "eps": [Interval(float, 0, None)],
    }

    def findings(self, result: AnalysisResult) -> list[Finding]:
        """See :func:`neuronmap.analyses._findings.activation_findings`."""
        from neuronmap.analyses._findings import activation_findings

        return activation_findings(result)

    def __init__(self, *, dead_threshold: float = 0.0, eps: float = 1e-6, layers: Any = None) -> None:
        super().__init__(layers=layers)
        self.dead_threshold = dead_threshold
        self.eps = eps

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        metrics = MetricSet()
        rows = []
        for layer, acts in self.layer_items(ctx):
            summary = activation_summary(acts, dead_threshold=self.dead_threshold, eps=self.eps)
            for key, value in summary.items():
                metrics.add(layer, key, value)
            rows.append({"layer": layer, "units": acts.reshape(acts.shape[0], -1).shape[1], **summary})
        table = pd.DataFrame(rows)
        return AnalysisResult(self.name, metrics=metrics, tables={"summary": table}, figures={"health": _figure(table)})


def _figure(table: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(7, 3), layout="constrained")
    left, right = fig.subplots(1, 2)
    x = range(len(table))
    left.bar(x, table["dead_fraction"], color="#b3261e", label="dead")
    left.bar(x, table["nonfinite_fraction"], bottom=table["dead_fraction"], color="#555", label="NaN/Inf")
    left.set_ylabel("fraction of units / entries")
    left.set_ylim(0, 1)
    left.legend(fontsize=7)
    right.plot(list(x), table["effective_rank"], marker="o")
    right.set_ylabel("effective rank (participation ratio)")
    for ax in (left, right):
        ax.set_xticks(list(x), table["layer"], rotation=60, ha="right", fontsize=6)
    fig.suptitle("Activation health by layer", fontsize=9)
    return fig
