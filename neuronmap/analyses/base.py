"""The analysis interface: :class:`Analysis`, its inputs and :class:`AnalysisResult`, and the registry.

An analysis reads an :class:`AnalysisContext` (activations, the probe set, the model, the
History of earlier runs) and returns an :class:`AnalysisResult` of scalar metrics, pandas
tables, matplotlib figures and notes. Numerics live in ``neuronmap.metrics`` and
``neuronmap.stats``; analyses only orchestrate them per layer.

Third-party analyses register under the entry-point group ``neuronmap.analyses``. The registry
itself (``register_analysis``, ``available_analyses``, ``get_analysis``, re-exported here) lives in
:mod:`neuronmap.analyses._registry`, which imports no analysis, so that findings and the tracker
headline rule can look an analysis up by name without importing this module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from neuronmap.analyses._registry import available_analyses, get_analysis, register_analysis
from neuronmap.analyses.params import STATISTICS, contract_init
from neuronmap.results import AnalysisResult, MetricSet  # re-exported: they lived here before

if TYPE_CHECKING:
    import torch

    from neuronmap.capture.hooks import Activations
    from neuronmap.findings import Finding
    from neuronmap.probe import ProbeSet
    from neuronmap.results import History

__all__ = [
    "Analysis",
    "AnalysisContext",
    "AnalysisResult",
    "MetricSet",
    "available_analyses",
    "get_analysis",
    "register_analysis",
]

@dataclass
class AnalysisContext:
    """Everything an analysis may read during one scheduled run."""

    #: The model (in eval mode; analyses that need gradients enable them locally).
    model: torch.nn.Module
    #: The fixed probe set.
    probe: ProbeSet
    #: Reduced activations of the monitored layers, ``layer -> [n, d]``.
    activations: Activations
    #: Global step, epoch and triggering event of this run.
    step: int
    epoch: int | None = None
    event: str | None = None
    #: Every earlier run's metrics (long format).
    history: History | None = None
    #: Device the model runs on.
    device: torch.device | None = None
    #: Batch size for any extra forward passes.
    batch_size: int = 32
    #: Seed for every random procedure (bootstrap, permutations, CV splits).
    random_state: int = 0

    @property
    def outputs(self) -> np.ndarray | None:
        """The model's top-level output (e.g. logits) on the probe set, when captured."""
        return self.activations.outputs


class Analysis(ABC):
    """Base class of every analysis.

    Subclasses set ``name`` (stable: it is part of metric keys), implement :meth:`run`, and
    may keep state across runs (drift references) exposed through :meth:`state_dict`.

    Attributes:
        name: Registry and metric-key name. Pass ``name=`` to an instance to run the same
            analysis twice in one monitor (``Probing(target="gender", name="probing_gender")``).
        needs_outputs: Whether the engine must capture the model's top-level output.
        needs_model: Whether :meth:`run` calls the live model (extra forward or backward
            passes). With ``NeuronMap(executor="background")`` these analyses run on the
            training thread; the others run in a worker process, from the activations, the
            model output and the probe set alone (``ctx.model`` there holds only the monitored
            layers' parameter-free modules, such as activation functions).
        layers: Optional selectors restricting the analysis to some captured layers.

    Example:
        >>> class MeanNorm(Analysis):
        ...     name = "mean_norm"
        ...     def run(self, ctx):
        ...         m = MetricSet()
        ...         for layer, x in self.layer_items(ctx):
        ...             m.add(layer, "norm", float(np.linalg.norm(x, axis=1).mean()))
        ...         return AnalysisResult(self.name, metrics=m)
    """

    name: ClassVar[str] = "analysis"
    needs_outputs: ClassVar[bool] = False
    needs_model: ClassVar[bool] = False
    #: Constructor attributes whose values name probe-set columns the analysis cannot run
    #: without (a column name, or a list of them); :meth:`check_probe` checks them.
    probe_columns: ClassVar[tuple[str, ...]] = ()
    #: ``fnmatch`` patterns of the metrics trackers chart by default (empty: every metric that
    #: is not a CI/p-value sibling and not per head); the rest stays in the history and tables.
    headline_metrics: ClassVar[tuple[str, ...]] = ()
    #: What each constructor argument may be (``{"cv": [Interval(int, 2, None)]}``, see
    #: :mod:`neuronmap.analyses.params`); merged along the class hierarchy, checked before the
    #: constructor body runs. The shared statistics settings are declared here once.
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = STATISTICS
    #: Renamed constructor arguments, ``{"old": "new"}``: the old name warns for one release.
    _renamed_parameters: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "__nm_contract__", False):
            cls.__init__ = contract_init(init)  # type: ignore[method-assign]

    def __init__(self, *, layers: str | list[str] | None = None, name: str | None = None) -> None:
        self.layers = [layers] if isinstance(layers, str) else layers
        if name is not None:  # validated by the constructor contract (analyses.params.STATISTICS["name"])
            self.name = name  # type: ignore[misc]  # per-instance override, e.g. two Probing targets

    @abstractmethod
    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        """Compute this analysis for one scheduled run."""

    def layer_items(self, ctx: AnalysisContext) -> list[tuple[str, np.ndarray]]:
        """The captured ``(layer, activations)`` pairs this analysis covers, in model order.

        ``layers`` selectors are names, globs, ``re:`` or ``type:`` (matched against ``ctx.model``'s modules).
        """
        names = ctx.activations.layers
        if self.layers:
            from neuronmap.capture.layers import match_selector

            modules = dict(ctx.model.named_modules()) if any(s.startswith("type:") for s in self.layers) else None
            chosen = {n for s in self.layers for n in match_selector(s, names, modules=modules)}
            names = [n for n in names if n in chosen]
        return [(n, np.asarray(ctx.activations[n])) for n in names]

    def findings(self, result: AnalysisResult) -> list[Finding]:
        """A few ranked claims about ``result`` (see :mod:`neuronmap.findings`).

        The default reports a failure, or the metrics whose corrected p-value (``_p_adj``)
        is below ``alpha``; changes since the previous run are added by the engine. Override
        to say what matters for this analysis (which layers encode a target, which bias
        metric crossed a threshold).
        """
        from neuronmap.findings import default_findings

        return default_findings(result, alpha=float(getattr(self, "alpha", 0.05)))

    def check_probe(self, probe: ProbeSet) -> list[str]:
        """What in ``probe`` would make this analysis fail (empty: nothing found).

        :meth:`NeuronMap.preflight <neuronmap.NeuronMap.preflight>` calls it before training
        starts. The default checks the columns named by the attributes in
        :attr:`probe_columns`; override it (and extend the list) for other requirements.

        Example:
            >>> from neuronmap.testing import tiny_probe
            >>> class NeedsAge(Analysis):
            ...     probe_columns = ("column",)
            ...     def __init__(self): super().__init__(); self.column = "age"
            ...     def run(self, ctx): ...
            >>> NeedsAge().check_probe(tiny_probe())[0][:51]
            "NeedsAge(column='age') needs probe-set column 'age'"
        """
        problems = []
        columns = [str(c) for c in probe.frame.columns]
        for attr in self.probe_columns:
            for column in _column_names(getattr(self, attr, None)):
                if column not in probe.frame.columns:
                    problems.append(
                        f"{type(self).__name__}({attr}={column!r}) needs probe-set column {column!r}, which probe "
                        f"set {probe.name!r} lacks; it has {columns}."
                    )
        return problems

    def config(self) -> dict[str, Any]:
        """JSON-able parameters of this analysis (for config.json and the audit trail)."""
        out = {k: v for k, v in vars(self).items() if not k.startswith("_") and _jsonable(v)}
        if "name" in vars(self):  # an instance name (``name=``) is part of the configuration
            out["name"] = self.name
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state carried across runs (override when there is any)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:  # noqa: B027  (optional hook)
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _column_names(value: Any) -> list[str]:
    """Column names in an attribute value: a name, or (nested) lists of names; other values name none."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in _column_names(item)]
    return []


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool)) or (
        isinstance(value, (list, tuple)) and all(_jsonable(v) for v in value)
    ) or (isinstance(value, dict) and all(isinstance(k, str) and _jsonable(v) for k, v in value.items()))
