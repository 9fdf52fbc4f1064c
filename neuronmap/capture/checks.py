"""Checks of capture settings that can be made before a model ever runs.

The engine calls them at construction and the preflight calls them before the first training
step, so that a wrong device or memory budget fails in the set-up, with a message that says
what is allowed, rather than as a raw torch ``AssertionError`` ("Torch not compiled with CUDA
enabled") or ``TypeError`` at the first scheduled run, hours into training.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from neuronmap.errors import InvalidParameterError

__all__ = ["available_devices", "check_device", "check_max_bytes"]


def available_devices() -> list[str]:
    """The devices this process can run on: ``cpu``, each ``cuda:i``, ``mps`` where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(device: Any, *, parameter: str = "device") -> torch.device | None:
    """``device`` as a :class:`torch.device` (``None`` stays ``None``: the model's own device).

    Args:
        device: ``None``, a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) or a
            :class:`torch.device`.
        parameter: The argument's name, for the message.

    Raises:
        InvalidParameterError: ``device`` is not a device, names an unknown device type, or one
            that this machine lacks (``torch.cuda.is_available()`` is false, or the index is out
            of range); the message lists the available devices.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device("tpu")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        InvalidParameterError: The 'device' parameter must be ...
    """
    if device is None:
        return None
    allowed = available_devices()
    if not isinstance(device, (str, torch.device)):
        raise InvalidParameterError(f"The {parameter!r} parameter must be None, a device string or a torch.device "
                                    f"(available here: {allowed}). Got {type(device).__name__} {device!r} instead.")
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise InvalidParameterError(f"The {parameter!r} parameter must be one of {allowed} (or None: the model's "
                                    f"device). Got {device!r} instead ({err}).") from err
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidParameterError(
                f"The {parameter!r} parameter is {str(device)!r}, but torch.cuda.is_available() is False on this "
                f"machine (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}). Available "
                f"devices: {allowed}; or pass None to run where the model is."
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InvalidParameterError(f"The {parameter!r} parameter is {str(device)!r}, but this machine has "
                                        f"{torch.cuda.device_count()} CUDA device(s). Available devices: {allowed}.")
    elif parsed.type == "mps" and "mps" not in allowed:
        raise InvalidParameterError(f"The {parameter!r} parameter is {str(device)!r}, but "
                                    f"torch.backends.mps.is_available() is False. Available devices: {allowed}.")
    elif parsed.type == "meta":
        raise InvalidParameterError(f"The {parameter!r} parameter cannot be 'meta' (meta tensors hold no "
                                    f"activations). Available devices: {allowed}.")
    return parsed


def check_max_bytes(max_bytes: Any, *, parameter: str = "max_bytes") -> int | None:
    """``max_bytes`` as an int > 0 (``None``: no budget).

    Raises:
        InvalidParameterError: Not an int (a string such as ``"1GB"`` included) or not positive.

    Example:
        >>> check_max_bytes(2**30)
        1073741824
    """
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or int(max_bytes) <= 0:
        hint = " (sizes are plain byte counts: write 2**30 for 1 GiB)" if isinstance(max_bytes, str) else ""
        raise InvalidParameterError(f"The {parameter!r} parameter must be a positive int number of bytes or None"
                                    f"{hint}. Got {max_bytes!r} instead.")
    return int(max_bytes)
