"""The documented import path of :mod:`neuronmap.capture.interventions` (patching, ablation and gradient taps).

The module moved into ``neuronmap.capture``, which owns running the model; every name stays
importable from here.
"""

from neuronmap.capture.interventions import (
    Edit,
    Node,
    answer_logits,
    forward,
    intervene,
    logits_of,
    record,
    resolve_nodes,
)

__all__ = [
    "Edit",
    "Node",
    "answer_logits",
    "forward",
    "intervene",
    "logits_of",
    "record",
    "resolve_nodes",
]
