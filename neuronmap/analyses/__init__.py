"""Analyses: each turns captured activations (and the model) into metrics, tables and figures.

Importing this package registers the built-in analyses (see :func:`available_analyses`).
"""

from neuronmap.analyses.activation_max import ActivationMaximization
from neuronmap.analyses.activation_stats import ActivationStats
from neuronmap.analyses.adversarial import AdversarialRobustness
from neuronmap.analyses.attention import AttentionAnalysis
from neuronmap.analyses.attribution import Attribution
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    available_analyses,
    get_analysis,
    register_analysis,
)
from neuronmap.analyses.causal_tracing import CausalTracing
from neuronmap.analyses.circuits import CircuitDiscovery
from neuronmap.analyses.concepts import ConceptAlgebra, ConceptExtraction
from neuronmap.analyses.counterfactual import CounterfactualBias
from neuronmap.analyses.crosslingual import CrossLingualAlignment
from neuronmap.analyses.fairness import Fairness
from neuronmap.analyses.information import Information
from neuronmap.analyses.neurons import NeuronStats
from neuronmap.analyses.patching import ActivationPatching
from neuronmap.analyses.performance import ModelPerformance
from neuronmap.analyses.probing import Probing
from neuronmap.analyses.projection import Projection
from neuronmap.analyses.regression_probing import RegressionProbing
from neuronmap.analyses.representation_bias import RepresentationBias
from neuronmap.analyses.similarity import CKA, RSA
from neuronmap.analyses.tcav import TCAV
from neuronmap.analyses.world_model import WorldModelProbe

__all__ = [
    "CKA",
    "RSA",
    "TCAV",
    "ActivationMaximization",
    "ActivationPatching",
    "ActivationStats",
    "AdversarialRobustness",
    "Analysis",
    "AnalysisContext",
    "AnalysisResult",
    "AttentionAnalysis",
    "Attribution",
    "CausalTracing",
    "CircuitDiscovery",
    "ConceptAlgebra",
    "ConceptExtraction",
    "CounterfactualBias",
    "CrossLingualAlignment",
    "Fairness",
    "Information",
    "MetricSet",
    "ModelPerformance",
    "NeuronStats",
    "Probing",
    "Projection",
    "RegressionProbing",
    "RepresentationBias",
    "WorldModelProbe",
    "available_analyses",
    "get_analysis",
    "register_analysis",
]
