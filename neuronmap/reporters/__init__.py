"""Reporters: where results go (a local run folder, MLflow, Weights & Biases, TensorBoard).

Tracker reporters import their tracker lazily, so ``import neuronmap.reporters`` stays light.
Third-party reporters register under the entry-point group ``neuronmap.reporters``.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from neuronmap.errors import InvalidParameterError
from neuronmap.reporters._spool import SpooledReporter
from neuronmap.reporters.base import BaseReporter, Reporter, publish_report
from neuronmap.reporters.local import LocalReporter

__all__ = [
    "BaseReporter",
    "CompositeReporter",
    "LocalReporter",
    "MLflowReporter",
    "Reporter",
    "SpooledReporter",
    "TensorBoardReporter",
    "WandbReporter",
    "available_reporters",
    "get_reporter",
    "publish_report",
]

#: Built-in reporters: registry name -> "module:Class".
_BUILTIN: dict[str, str] = {
    "composite": "neuronmap.reporters.composite:CompositeReporter",
    "local": "neuronmap.reporters.local:LocalReporter",
    "mlflow": "neuronmap.reporters.mlflow:MLflowReporter",
    "tensorboard": "neuronmap.reporters.tensorboard:TensorBoardReporter",
    "wandb": "neuronmap.reporters.wandb:WandbReporter",
}

#: Classes imported on first access, so that ``import neuronmap.reporters`` imports no tracker.
_LAZY: dict[str, str] = {
    "MLflowReporter": "neuronmap.reporters.mlflow",
    "WandbReporter": "neuronmap.reporters.wandb",
    "TensorBoardReporter": "neuronmap.reporters.tensorboard",
    "CompositeReporter": "neuronmap.reporters.composite",
}


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="neuronmap.reporters")}


def available_reporters() -> list[str]:
    """Names accepted by :func:`get_reporter`."""
    return sorted(set(_BUILTIN) | set(_entry_points()))


def get_reporter(name: str, **kwargs: Any) -> Reporter:
    """Create a reporter by registry name.

    Raises:
        InvalidParameterError: Unknown name; the message lists the known ones.
    """
    if name in _BUILTIN:
        module, cls = _BUILTIN[name].split(":")
        return getattr(import_module(module), cls)(**kwargs)
    eps = _entry_points()
    if name in eps:
        return eps[name].load()(**kwargs)
    raise InvalidParameterError(f"Unknown reporter {name!r}; known reporters: {available_reporters()}.")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neuronmap.reporters' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
