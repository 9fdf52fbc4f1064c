"""What the built-in analyses claim about a run (their ``findings`` hooks), in one place.

Each function reads an :class:`~neuronmap.analyses.base.AnalysisResult` only: significance
from the ``_p_adj`` siblings the analysis already corrected across layers, uncertainty from
``_ci_low``/``_ci_high``. Thresholds are conventions named in each finding's text (the
four-fifths rule for ratios, 0.1 for absolute disparities, 10 % dead units), so a reader can
disagree with them knowingly.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from neuronmap._keys import SIBLINGS
from neuronmap.findings import (
    Finding,
    default_findings,
    describe,
    failure_findings,
    format_value,
    significant_findings,
    split_rel,
    stats_of,
)

if TYPE_CHECKING:
    from neuronmap.analyses.base import AnalysisResult

__all__ = [
    "activation_findings",
    "attention_findings",
    "cka_findings",
    "fairness_findings",
    "neuron_findings",
    "probing_findings",
    "representation_bias_findings",
]


def _by_metric(result: AnalysisResult, metric: str) -> list[tuple[str, float, dict[str, Any]]]:
    """``(layer, value, {ci, p_adj})`` of one metric over layers, in the result's order."""
    out = []
    for rel, value in result.metrics.items():
        layer, name = split_rel(rel)
        if name == metric:
            out.append((layer, float(value), stats_of(result.metrics, layer, name)))
    return out


def probing_findings(result: AnalysisResult, *, alpha: float = 0.05) -> list[Finding]:
    """Which layers encode the target (corrected accuracy test), and how selective the best one is."""
    if result.status != "ok":
        return failure_findings(result)
    rows = [r for r in _by_metric(result, "accuracy") if math.isfinite(r[1])]
    if not rows:
        return []
    tested = [r for r in rows if r[2]["p_adj"] is not None]
    encoding = [r for r in tested if r[2]["p_adj"] < alpha]
    best = max(encoding or rows, key=lambda r: r[1])
    layer, value, st = best
    out: list[Finding] = []
    if encoding:
        out.append(Finding(result.name, layer, "accuracy", value, "encodes",
                           f"target decodable in {len(encoding)}/{len(rows)} layers; best {layer}: accuracy "
                           f"{describe(value, **st)}", score=value * 5, **st))
    elif tested:
        out.append(Finding(result.name, layer, "accuracy", value, "info",
                           f"no layer encodes the target above chance after correction (best {layer}: "
                           f"accuracy {describe(value, **st)})", **st))
    sel = {r[0]: r for r in _by_metric(result, "selectivity")}
    if layer in sel and math.isfinite(sel[layer][1]):
        s_st = sel[layer][2]
        note = " (significant)" if s_st["p_adj"] is not None and s_st["p_adj"] < alpha else ""
        out.append(Finding(result.name, layer, "selectivity", sel[layer][1], "info",
                           f"selectivity over the control task at {layer}: "
                           f"{describe(sel[layer][1], **s_st)}{note}", **s_st))
    return out


_RATIO = re.compile(r"_ratio$")


def fairness_findings(
    result: AnalysisResult, *, alpha: float = 0.05, max_difference: float = 0.1, min_ratio: float = 0.8
) -> list[Finding]:
    """Disparities that cross a threshold (difference > 0.1, ratio < 0.8) or are significant."""
    if result.status != "ok":
        return failure_findings(result)
    out: list[Finding] = []
    largest: tuple[float, str, str, float] | None = None
    for rel, value in result.metrics.items():
        attr, metric = split_rel(rel)
        if metric.endswith(SIBLINGS) or not math.isfinite(value):
            continue
        is_ratio = bool(_RATIO.search(metric))
        if not is_ratio and not metric.endswith("_difference"):
            continue
        st = stats_of(result.metrics, attr, metric)
        crossed = value < min_ratio if is_ratio else abs(value) > max_difference
        threshold = min_ratio if is_ratio else max_difference
        significant = st["p_adj"] is not None and st["p_adj"] < alpha
        if not is_ratio and (largest is None or abs(value) > largest[0]):
            largest = (abs(value), attr, metric, value)
        if crossed:
            word = "below" if is_ratio else "above"
            past = (min_ratio - value) if is_ratio else (abs(value) - max_difference)
            out.append(Finding(result.name, attr, metric, value, "threshold",
                               f"{metric} for {attr} = {describe(value, **st)}, {word} the "
                               f"{format_value(threshold)} threshold", threshold=threshold, score=past * 20, **st))
        elif significant:
            out.append(Finding(result.name, attr, metric, value, "significant",
                               f"{metric} for {attr} = {describe(value, **st)} "
                               f"(significant, within the {format_value(threshold)} threshold)",
                               threshold=threshold, **st))
    if not out and largest is not None:
        _, attr, metric, value = largest
        out.append(Finding(result.name, attr, metric, value, "info",
                           f"no disparity crosses its threshold (largest: {metric} for {attr} = "
                           f"{format_value(value)})", threshold=max_difference))
    return sorted(out, key=lambda f: -f.rank)[:4]


def cka_findings(result: AnalysisResult, *, min_similarity: float = 0.9) -> list[Finding]:
    """The layer whose representation moved most since the previous run and since the first."""
    if result.status != "ok":
        return failure_findings(result)
    out: list[Finding] = []
    lowest: list[tuple[str, str, float]] = []
    for metric, since in (("drift_previous", "the previous run"), ("drift_first", "the first run")):
        rows = [r for r in _by_metric(result, metric) if math.isfinite(r[1])]
        if not rows:
            continue
        layer, value, _ = min(rows, key=lambda r: r[1])
        lowest.append((metric, layer, value))
        if value < min_similarity:
            out.append(Finding(result.name, layer, metric, value, "change",
                               f"representations changed most since {since} at {layer}: CKA "
                               f"{format_value(value)} (< {format_value(min_similarity)})",
                               threshold=min_similarity, score=(1 - value) * 10))
    if not out and lowest:
        metric, layer, value = min(lowest, key=lambda r: r[2])
        out.append(Finding(result.name, layer, metric, value, "info",
                           f"representations stable: CKA >= {format_value(min_similarity)} in every layer "
                           f"(lowest {format_value(value)}, {metric} at {layer})", threshold=min_similarity))
    return out


def representation_bias_findings(result: AnalysisResult, *, alpha: float = 0.05) -> list[Finding]:
    """Attributes decodable above their majority baseline, and significant WEAT effects."""
    if result.status != "ok":
        return failure_findings(result)
    out: list[Finding] = []
    for rel, value in result.metrics.items():
        layer, metric = split_rel(rel)
        if not metric.endswith("_decodability") or not math.isfinite(value):
            continue
        st = stats_of(result.metrics, layer, metric)
        if st["p_adj"] is None or st["p_adj"] >= alpha:
            continue
        attr = metric[: -len("_decodability")]
        base = result.metrics.get(f"{layer}/{attr}_majority_baseline", math.nan)
        out.append(Finding(result.name, layer, metric, value, "significant",
                           f"{attr} decodable from {layer}: {describe(value, **st)} vs. "
                           f"majority baseline {format_value(base)}", threshold=base,
                           score=(value - base) * 10 if math.isfinite(base) else 0.0, **st))
    out = sorted(out, key=lambda f: -f.rank)[:2]
    out += significant_findings(result, alpha=alpha, metrics=["weat_effect_size"], limit=2)
    return out


def neuron_findings(result: AnalysisResult, *, max_dead: float = 0.1, max_saturated: float = 0.1) -> list[Finding]:
    """Layers with many dead or saturated units, and outlier dimensions."""
    if result.status != "ok":
        return failure_findings(result)
    out: list[Finding] = []
    for metric, limit, what in (("dead_fraction", max_dead, "dead"), ("saturated_fraction", max_saturated,
                                                                      "saturated")):
        for layer, value, _ in _by_metric(result, metric):
            if math.isfinite(value) and value > limit:
                out.append(Finding(result.name, layer, metric, value, "threshold",
                                   f"{value:.0%} {what} units at {layer} (threshold {limit:.0%})",
                                   threshold=limit, score=value * 10))
    outliers = [r for r in _by_metric(result, "outlier_dims") if math.isfinite(r[1]) and r[1] > 0]
    if outliers:
        layer, value, _ = max(outliers, key=lambda r: r[1])
        out.append(Finding(result.name, layer, "outlier_dims", value, "info",
                           f"outlier dimensions in {len(outliers)} layers (most: {int(value)} at {layer})"))
    return sorted(out, key=lambda f: -f.rank)[:3]


def activation_findings(result: AnalysisResult) -> list[Finding]:
    """Non-finite activations (NaN/Inf) anywhere: the one health fact that cannot wait."""
    if result.status != "ok":
        return failure_findings(result)
    return [Finding(result.name, layer, "nonfinite_fraction", value, "threshold",
                    f"{value:.1%} of activations at {layer} are NaN or Inf", threshold=0.0, score=9.0)
            for layer, value, _ in _by_metric(result, "nonfinite_fraction") if math.isfinite(value) and value > 0]


def attention_findings(result: AnalysisResult, *, alpha: float = 0.05, sink: float = 0.5) -> list[Finding]:
    """Heads whose ablation matters (corrected), and layers whose attention sinks into special tokens."""
    if result.status != "ok":
        return failure_findings(result)
    heads = [f for f in default_findings(result, alpha=alpha, limit=10) if f.metric.endswith("_importance")][:3]
    out = [Finding(f.analysis, f.layer, f.metric, f.value, "significant",
                   f"{f.metric.split('_')[0]} of {f.layer} matters: ablation effect "
                   f"{describe(f.value, f.ci, f.p_adj, f.p)}", ci=f.ci, p_adj=f.p_adj, p=f.p, score=f.score)
           for f in heads]
    sinks = [r for r in _by_metric(result, "special_mass") if math.isfinite(r[1]) and r[1] > sink]
    if sinks:
        layer, value, _ = max(sinks, key=lambda r: r[1])
        out.append(Finding(result.name, layer, "special_mass", value, "info",
                           f"attention sinks into special tokens in {len(sinks)} layers (most at {layer}: "
                           f"{value:.0%} of attention mass)", threshold=sink))
    return out
