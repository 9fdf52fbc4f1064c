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

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> ``"module"`` (same attribute name) or ``"module:attribute"``. Each is imported
#: on first access (PEP 562 ``__getattr__``), so ``import neuronmap`` and ``neuronmap --version``
#: import neither torch nor scipy. To export a new name: one line here, one in ``__all__`` and
#: one under ``TYPE_CHECKING`` (tests/test_import.py checks that the three agree).
_LAZY: dict[str, str] = {
    "CKA": "neuronmap.analyses",
    "RSA": "neuronmap.analyses",
    "TCAV": "neuronmap.analyses",
    "ActivationCapture": "neuronmap.capture",
    "ActivationMaximization": "neuronmap.analyses",
    "ActivationPatching": "neuronmap.analyses",
    "ActivationStats": "neuronmap.analyses",
    "AdversarialRobustness": "neuronmap.analyses",
    "Activations": "neuronmap.capture",
    "Analysis": "neuronmap.analyses",
    "AnalysisContext": "neuronmap.analyses",
    "AnalysisResult": "neuronmap.results",
    "AttentionAnalysis": "neuronmap.analyses",
    "Attribution": "neuronmap.analyses",
    "AuditTrail": "neuronmap.compliance.audit",
    "CausalTracing": "neuronmap.analyses",
    "CircuitDiscovery": "neuronmap.analyses",
    "ConceptAlgebra": "neuronmap.analyses",
    "ConceptExtraction": "neuronmap.analyses",
    "CounterfactualBias": "neuronmap.analyses",
    "CrossLingualAlignment": "neuronmap.analyses",
    "Fairness": "neuronmap.analyses",
    "GateMonitor": "neuronmap.compliance.gates",
    "History": "neuronmap.results",
    "Information": "neuronmap.analyses",
    "InvalidParameterError": "neuronmap.errors",
    "LayerNotFoundError": "neuronmap.errors",
    "MetricSet": "neuronmap.results",
    "ModelCard": "neuronmap.compliance.cards",
    "ModelPerformance": "neuronmap.analyses",
    "NeuronMap": "neuronmap.engine",
    "NeuronMapError": "neuronmap.errors",
    "NeuronStats": "neuronmap.analyses",
    "ProbeSet": "neuronmap.probe",
    "ProbeSetError": "neuronmap.errors",
    "Probing": "neuronmap.analyses",
    "Projection": "neuronmap.analyses",
    "RegressionProbing": "neuronmap.analyses",
    "Report": "neuronmap.results",
    "RepresentationBias": "neuronmap.analyses",
    "Schedule": "neuronmap.schedule",
    "WorldModelProbe": "neuronmap.analyses",
    "capture_activations": "neuronmap.capture",
    "data": "neuronmap",
    "evaluate_gates": "neuronmap.compliance.gates:evaluate",
    "presets": "neuronmap",
    "render_card": "neuronmap.compliance.cards",
}

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from neuronmap import data, presets
    from neuronmap.analyses import (
        CKA,
        RSA,
        TCAV,
        ActivationMaximization,
        ActivationPatching,
        ActivationStats,
        AdversarialRobustness,
        Analysis,
        AnalysisContext,
        AttentionAnalysis,
        Attribution,
        CausalTracing,
        CircuitDiscovery,
        ConceptAlgebra,
        ConceptExtraction,
        CounterfactualBias,
        CrossLingualAlignment,
        Fairness,
        Information,
        ModelPerformance,
        NeuronStats,
        Probing,
        Projection,
        RegressionProbing,
        RepresentationBias,
        WorldModelProbe,
    )
    from neuronmap.capture import ActivationCapture, Activations, capture_activations
    from neuronmap.compliance.audit import AuditTrail
    from neuronmap.compliance.cards import ModelCard, render_card
    from neuronmap.compliance.gates import GateMonitor
    from neuronmap.compliance.gates import evaluate as evaluate_gates
    from neuronmap.engine import NeuronMap
    from neuronmap.errors import (
        InvalidParameterError,
        LayerNotFoundError,
        NeuronMapError,
        ProbeSetError,
    )
    from neuronmap.probe import ProbeSet
    from neuronmap.results import AnalysisResult, History, MetricSet, Report
    from neuronmap.schedule import Schedule


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'neuronmap' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    if module == __name__:  # a subpackage (nm.data, nm.presets); importing it binds the attribute
        return import_module(f"{__name__}.{name}")
    value = getattr(import_module(module), attribute or name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CKA",
    "RSA",
    "TCAV",
    "ActivationCapture",
    "ActivationMaximization",
    "ActivationPatching",
    "ActivationStats",
    "Activations",
    "AdversarialRobustness",
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
    "CrossLingualAlignment",
    "Fairness",
    "GateMonitor",
    "History",
    "Information",
    "InvalidParameterError",
    "LayerNotFoundError",
    "MetricSet",
    "ModelCard",
    "ModelPerformance",
    "NeuronMap",
    "NeuronMapError",
    "NeuronStats",
    "ProbeSet",
    "ProbeSetError",
    "Probing",
    "Projection",
    "RegressionProbing",
    "Report",
    "RepresentationBias",
    "Schedule",
    "WorldModelProbe",
    "__version__",
    "capture_activations",
    "data",
    "evaluate_gates",
    "presets",
    "render_card",
]
