"""Analyses: each turns captured activations (and the model) into metrics, tables and figures."""

from neuronmap.analyses.activation_stats import ActivationStats
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    available_analyses,
    get_analysis,
    register_analysis,
)

__all__ = [
    "ActivationStats",
    "Analysis",
    "AnalysisContext",
    "AnalysisResult",
    "MetricSet",
    "available_analyses",
    "get_analysis",
    "register_analysis",
]
