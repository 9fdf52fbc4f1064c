"""Bounded HTTP retries and timeouts for every MLflow call NeuronMap makes.

MLflow's defaults (7 retries with exponential back-off, 120 s timeout) let one call to an
unreachable server hang for minutes: a training step stalls, ``neuronmap gate mlflow:ID`` takes
four minutes to say the tracker is down. MLflow reads its ``MLFLOW_HTTP_REQUEST_*`` environment
variables on every request, so :func:`bounded_http` sets them for the duration of a call.
Variables the user has set are left alone: their settings win.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["READ_RETRIES", "READ_TIMEOUT_S", "bounded_http"]

#: Limits of commands that read a run (``gate``, ``card``, ``compare`` ... on ``mlflow:ID``):
#: an unreachable tracker is reported within about 2 x timeout + back-off (~12 s).
READ_RETRIES = 1
READ_TIMEOUT_S = 5.0


@contextmanager
def bounded_http(retries: int, timeout: float) -> Iterator[None]:
    """Bound MLflow's HTTP retries and timeout inside the ``with`` block (user settings win).

    Args:
        retries: Retries per request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``), back-off factor 1 s.
        timeout: Seconds per request (``MLFLOW_HTTP_REQUEST_TIMEOUT``, at least 1).

    Example:
        >>> with bounded_http(1, 5.0):
        ...     os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") is not None
        True
    """
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(max(1, timeout)))}
    added = [k for k in wanted if k not in os.environ]
    os.environ.update({k: wanted[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
