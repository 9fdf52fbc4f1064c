"""Activation capture: layer selectors, forward hooks and on-device reductions."""

from neuronmap.capture.checks import available_devices, check_device, check_max_bytes
from neuronmap.capture.hooks import (
    ActivationCapture,
    Activations,
    capture_activations,
    model_device,
)
from neuronmap.capture.layers import glob_to_regex, module_names, resolve_layers
from neuronmap.capture.reduce import REDUCTIONS, reduce_tokens

__all__ = [
    "REDUCTIONS",
    "ActivationCapture",
    "Activations",
    "available_devices",
    "capture_activations",
    "check_device",
    "check_max_bytes",
    "glob_to_regex",
    "model_device",
    "module_names",
    "reduce_tokens",
    "resolve_layers",
]
