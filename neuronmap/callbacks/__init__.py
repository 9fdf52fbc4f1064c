"""Training-loop callbacks: Lightning (:class:`NeuronMapCallback`) and HF Trainer (:class:`NeuronMapTrainerCallback`).

Importing this package imports neither Lightning nor transformers: each callback's module is
imported the first time its name is accessed, and raises :class:`~neuronmap.errors.MissingDependencyError`
naming the extra to install when its framework is missing.

Example:
    >>> import sys
    >>> import neuronmap.callbacks
    >>> "lightning" in sys.modules or "transformers" in sys.modules  # doctest: +SKIP
    False
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neuronmap.callbacks.huggingface import NeuronMapTrainerCallback
    from neuronmap.callbacks.lightning import NeuronMapCallback

__all__ = ["NeuronMapCallback", "NeuronMapTrainerCallback"]

_LAZY = {
    "NeuronMapCallback": "neuronmap.callbacks.lightning",
    "NeuronMapTrainerCallback": "neuronmap.callbacks.huggingface",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # later accesses skip this function
        return value
    raise AttributeError(f"module 'neuronmap.callbacks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
