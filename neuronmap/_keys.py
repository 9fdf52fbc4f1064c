"""Metric keys: ``neuronmap/<analysis>/<layer>/<metric>``, relative keys and statistic siblings.

Keys are stable, slash-separated and tracker-safe. Within one :class:`~neuronmap.results.MetricSet`
a metric is keyed relative to its analysis, ``<layer>/<metric>``; a statistic's uncertainty sits
beside it as siblings ``<metric>_ci_low``, ``_ci_high``, ``_p`` and ``_p_adj``.

A leaf module (it imports no other neuronmap module): results, findings and the tracker headline
rule all read keys, and each of them imports this rather than one another.
Re-exported by :mod:`neuronmap.results` (``PREFIX``, ``metric_key``, ``split_key``) and
:mod:`neuronmap.findings` (``SIBLINGS``, ``split_rel``, ``is_sibling``).
"""

from __future__ import annotations

__all__ = ["PREFIX", "SIBLINGS", "is_sibling", "metric_key", "split_key", "split_rel"]

PREFIX = "neuronmap"
#: Statistic siblings of a metric (``<metric>_ci_low`` ...): detail, never a finding of their own.
SIBLINGS = ("_ci_low", "_ci_high", "_p_adj", "_p")


def metric_key(analysis: str, layer: str, metric: str) -> str:
    """The stable tracker key ``neuronmap/<analysis>/<layer>/<metric>``."""
    return f"{PREFIX}/{analysis}/{layer}/{metric}"


def split_key(key: str) -> tuple[str, str, str]:
    """``(analysis, layer, metric)`` of a stable key (the layer part may contain ``/``)."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] != PREFIX:
        raise ValueError(f"Not a NeuronMap metric key: {key!r} (expected 'neuronmap/<analysis>/<layer>/<metric>').")
    return parts[1], "/".join(parts[2:-1]), parts[-1]


def split_rel(rel: str) -> tuple[str, str]:
    """``(layer, metric)`` of a relative key ``<layer>/<metric>``."""
    layer, _, metric = rel.rpartition("/")
    return layer, metric


def is_sibling(metric: str) -> bool:
    """Whether ``metric`` is a statistic sibling (``_ci_low``, ``_ci_high``, ``_p``, ``_p_adj``) of another."""
    return metric.endswith(SIBLINGS)
