"""NeuronMap: interpretability that lives in your training loop.

Add one callback (Lightning or Hugging Face Trainer) or two lines to a plain loop; on a
schedule NeuronMap runs the model on a fixed probe set, captures activations with forward
hooks, runs analyses with proper statistics and logs the results to your tracker.

Example:
    >>> import neuronmap as nm
    >>> from neuronmap.testing import tiny_mlp, tiny_probe
    >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[nm.ActivationStats()],
    ...                        reporters=[])
    >>> report = monitor.run(tiny_mlp(), step=0)
"""

from neuronmap.analyses import (
    CKA,
    RSA,
    TCAV,
    ActivationMaximization,
    ActivationPatching,
    ActivationStats,
    Analysis,
    AnalysisContext,
    AnalysisResult,
    AttentionAnalysis,
    Attribution,
    CausalTracing,
    CircuitDiscovery,
    ConceptAlgebra,
    ConceptExtraction,
    CounterfactualBias,
    Fairness,
    Information,
    MetricSet,
    NeuronStats,
    Probing,
    Projection,
    RepresentationBias,
)
from neuronmap.audit import AuditTrail
from neuronmap.capture import ActivationCapture, Activations, capture_activations
from neuronmap.cards import ModelCard, render_card
from neuronmap.engine import NeuronMap
from neuronmap.errors import (
    InvalidParameterError,
    LayerNotFoundError,
    NeuronMapError,
    ProbeSetError,
)
from neuronmap.gates import GateMonitor
from neuronmap.gates import evaluate as evaluate_gates
from neuronmap.probe import ProbeSet
from neuronmap.results import History, Report
from neuronmap.schedule import Schedule

__version__ = "0.1.0"

__all__ = [
    "CKA",
    "RSA",
    "TCAV",
    "ActivationCapture",
    "ActivationMaximization",
    "ActivationPatching",
    "ActivationStats",
    "Activations",
    "Analysis",
    "AnalysisContext",
    "AnalysisResult",
    "AttentionAnalysis",
    "Attribution",
    "AuditTrail",
    "CausalTracing",
    "CircuitDiscovery",
    "ConceptAlgebra",
    "ConceptExtraction",
    "CounterfactualBias",
    "Fairness",
    "GateMonitor",
    "History",
    "Information",
    "InvalidParameterError",
    "LayerNotFoundError",
    "MetricSet",
    "ModelCard",
    "NeuronMap",
    "NeuronMapError",
    "NeuronStats",
    "ProbeSet",
    "ProbeSetError",
    "Probing",
    "Projection",
    "Report",
    "RepresentationBias",
    "Schedule",
    "__version__",
    "capture_activations",
    "evaluate_gates",
    "render_card",
]
