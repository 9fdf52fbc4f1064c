"""Where concept examples come from: probe-set tag columns, index lists or separate probe sets.

Shared by :class:`~neuronmap.analyses.tcav.TCAV` and the concept analyses. A concept is
given as

* ``"column"``: the probe examples whose metadata column is truthy (a boolean tag);
* ``"column=value"``: the probe examples whose column equals ``value`` (compared as text);
* a list of probe indices;
* a separate :class:`~neuronmap.probe.ProbeSet` of concept examples, whose activations are
  captured batch by batch and reduced on the device, so memory stays ``n x d`` per layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from neuronmap.analyses.base import Analysis
from neuronmap.capture.hooks import ActivationCapture, run_probe, to_numpy
from neuronmap.errors import InvalidParameterError, ProbeSetError
from neuronmap.probe import ProbeSet

ConceptSpec = str | ProbeSet | Sequence[int]
ConceptsArg = Mapping[str, ConceptSpec] | Sequence[str]


class ConceptSetAnalysis(Analysis):
    """Base of the analyses whose first argument names concepts (TCAV, ConceptAlgebra).

    The subclass keeps ``concepts`` as passed and its normalised form in ``_specs``
    (:func:`concept_specs`, which also checks it).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"concepts": ["no_validation"]}  # concept_specs
    _specs: dict[str, ConceptSpec]

    def config(self) -> dict[str, Any]:
        """The parameters; concepts that are not JSON-able (probe sets, index arrays) are described."""
        return {"concepts": concepts_config(self._specs), **super().config()}


def concept_specs(concepts: ConceptsArg, owner: str) -> dict[str, ConceptSpec]:
    """Normalise the ``concepts`` argument of analysis ``owner`` to ``name -> spec`` and check the names."""
    if isinstance(concepts, str):
        concepts = [concepts]
    if not isinstance(concepts, (Mapping, Sequence)) or not concepts:
        raise InvalidParameterError(f"{owner}: concepts must be a non-empty list of tag columns or a mapping "
                                    f"name -> examples; got {concepts!r}.")
    specs: dict[str, ConceptSpec] = (
        dict(concepts) if isinstance(concepts, Mapping) else {str(c): str(c) for c in concepts}
    )
    for name in specs:
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidParameterError(f"{owner}: concepts must be named by non-empty strings without '/' (the "
                                        f"names become metric names); got {name!r}.")
    return specs


def concepts_config(specs: Mapping[str, ConceptSpec]) -> dict[str, Any]:
    """A JSON-able account of the concepts for ``config()`` (a separate probe set by its name and size)."""
    return {name: spec if isinstance(spec, str)
            else f"ProbeSet {spec.name!r} of {len(spec)} examples" if isinstance(spec, ProbeSet)
            else [int(i) for i in spec] for name, spec in specs.items()}


def _truthy(values: np.ndarray) -> np.ndarray:
    if values.dtype == bool:
        return values
    if values.dtype.kind in "iuf":
        return np.nan_to_num(values.astype(float)) != 0
    return np.array([bool(v) and str(v).lower() not in ("false", "0", "no", "nan", "none") for v in values])


def probe_members(probe: ProbeSet, spec: ConceptSpec, name: str) -> np.ndarray | None:
    """Indices of the probe examples of a concept, or ``None`` for a separate probe set.

    Raises:
        ProbeSetError: A named column is missing or an index is out of range.
    """
    if isinstance(spec, ProbeSet):
        return None
    if isinstance(spec, str):
        column, _, value = spec.partition("=")
        values = probe.column(column)
        mask = np.array([str(v) == value for v in values]) if value else _truthy(values)
        return np.flatnonzero(mask)
    idx = np.asarray(list(spec), dtype=int)
    if idx.size and (idx.min() < 0 or idx.max() >= len(probe)):
        raise ProbeSetError(
            f"Concept {name!r} lists probe indices outside [0, {len(probe) - 1}]: got min {idx.min()}, max {idx.max()}."
        )
    return idx


def capture_reduced(
    model: nn.Module,
    probe: ProbeSet,
    layers: Sequence[str],
    *,
    reduce: str,
    batch_size: int,
    device: torch.device | None,
) -> dict[str, np.ndarray]:
    """Reduced activations ``layer -> [n, d]`` of a probe set (no gradients, bounded memory)."""
    cap = ActivationCapture(model, list(layers), reduce=reduce)  # type: ignore[arg-type]
    run_probe(model, probe, cap, batch_size=batch_size, device=device)
    return {k: to_numpy(v).reshape(len(probe), -1) for k, v in cap.collect().items()}


def concept_activations(
    spec: ConceptSpec,
    name: str,
    *,
    probe: ProbeSet,
    probe_acts: Mapping[str, np.ndarray],
    capture: Any,
) -> dict[str, np.ndarray]:
    """Activations ``layer -> [m, d]`` of one concept's examples.

    Args:
        spec: The concept's spec.
        name: Its name (for messages).
        probe: The probe set (for tag columns and indices).
        probe_acts: Reduced probe activations per layer.
        capture: ``ProbeSet -> {layer: [m, d]}`` for separate concept probe sets.
    """
    members = probe_members(probe, spec, name)
    if members is None:
        return dict(capture(spec))
    return {layer: acts[members] for layer, acts in probe_acts.items()}


def example_labels(probe: ProbeSet, indices: np.ndarray) -> dict[str, list[Any]]:
    """Columns that make top-example tables readable: text (if any) and label (if any)."""
    out: dict[str, list[Any]] = {}
    texts = probe.texts
    if texts is not None:
        out["text"] = [texts[i] for i in indices]
    labels = probe.labels
    if labels is not None:
        out["label"] = [labels[i].item() if hasattr(labels[i], "item") else labels[i] for i in indices]
    return out
