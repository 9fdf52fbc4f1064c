"""Which scalars a tracker's charts get, and under which keys: one rule for every reporter.

The full record (every statistic of every layer) stays in the local history and the run's
``metrics.jsonl``, which gates read, under ``neuronmap/<analysis>/<layer>/<metric>``. A
tracker's scalar charts get the *headline* metrics only, keyed
``neuronmap/<analysis>/<metric>/<layer>``: MLflow and W&B group charts by the prefix before
the last ``/`` and TensorBoard's custom-scalars layout by a regex, so one section is one
metric across layers. CIs, p-values and per-head or per-group detail go to tables and
artifacts; ``scalars="all"`` sends everything as scalars (same layout).

Headline metrics are declared by each analysis (``Analysis.headline_metrics``, ``fnmatch``
patterns over metric names); an analysis that declares none gets every metric that is not a
statistic sibling and not per head (``head<N>_...``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Literal

from neuronmap._keys import PREFIX, SIBLINGS, split_rel
from neuronmap.errors import InvalidParameterError

if TYPE_CHECKING:
    from neuronmap.analyses.base import Analysis, AnalysisResult
    from neuronmap.results import Report

__all__ = ["SCALAR_MODES", "Scalars", "check_scalars", "headline_patterns", "is_headline", "tracker_key",
           "tracker_metrics"]

Scalars = Literal["headline", "all"]
SCALAR_MODES = ("headline", "all")
_PER_HEAD = re.compile(r"^head\d+_")
#: Tag/param telling readers (``neuronmap gate mlflow:ID``) how tracker keys are laid out.
LAYOUT_TAG = "neuronmap.key_layout"
LAYOUT = "analysis/metric/layer"


def check_scalars(value: str, owner: str) -> Scalars:
    if value not in SCALAR_MODES:
        raise InvalidParameterError(f"The 'scalars' parameter of {owner} must be one of {list(SCALAR_MODES)}. "
                                    f"Got {value!r} instead.")
    return value  # type: ignore[return-value]


def tracker_key(analysis: str, layer: str, metric: str) -> str:
    """``neuronmap/<analysis>/<metric>/<layer>``: the key a tracker chart is filed under."""
    return f"{PREFIX}/{analysis}/{metric}/{layer}"


def history_key_of(tracker: str) -> str:
    """The history key ``neuronmap/<analysis>/<layer>/<metric>`` of a tracker key."""
    parts = tracker.split("/")
    if len(parts) < 4 or parts[0] != PREFIX:
        return tracker
    return "/".join([parts[0], parts[1], *parts[3:], parts[2]])


def headline_patterns(analysis: Analysis | None, result: AnalysisResult | None = None) -> tuple[str, ...]:
    """The analysis' declared headline patterns (empty: the default rule applies)."""
    declared = getattr(analysis, "headline_metrics", ()) if analysis is not None else ()
    return tuple(declared)


def is_headline(metric: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether ``metric`` is a headline metric under ``patterns`` (or the default rule when empty)."""
    if metric.endswith(SIBLINGS):
        return False
    if patterns:
        return any(fnmatchcase(metric, p) for p in patterns)
    return not _PER_HEAD.match(metric)


def tracker_metrics(report: Report, *, scalars: Scalars = "headline") -> dict[str, float]:
    """The scalars a tracker gets for ``report``, keyed by :func:`tracker_key`.

    Example:
        >>> from neuronmap.analyses.base import AnalysisResult
        >>> from neuronmap.results import Report
        >>> r = Report(0, None, None, "", {"probing": AnalysisResult("probing", {
        ...     "l0/accuracy": 0.9, "l0/accuracy_p_adj": 0.01})})
        >>> tracker_metrics(r)
        {'neuronmap/probing/accuracy/l0': 0.9}
    """
    headline: Mapping[str, tuple[str, ...]] = getattr(report, "headline", None) or {}
    out: dict[str, float] = {}
    for name, result in report.results.items():
        patterns = headline.get(name)
        if patterns is None:
            from neuronmap.analyses._registry import default_instance

            patterns = headline_patterns(default_instance(name))
        for rel, value in result.metrics.items():
            layer, metric = split_rel(rel)
            if scalars == "headline" and not is_headline(metric, patterns):
                continue
            out[tracker_key(name, layer, metric)] = float(value)
    return out
