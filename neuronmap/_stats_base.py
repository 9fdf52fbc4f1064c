"""What the statistics modules share: the interval result type and input checks.

Public names are re-exported by :mod:`neuronmap.stats`; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from neuronmap.errors import InvalidParameterError

__all__ = ["PVALUE_METHODS", "ConfidenceInterval"]

PVALUE_METHODS: tuple[str, ...] = (
    "bonferroni",
    "sidak",
    "holm-sidak",
    "holm",
    "simes-hochberg",
    "hommel",
    "fdr_bh",
    "fdr_by",
    "fdr_tsbh",
    "fdr_tsbky",
    "fdr_gbs",
    "lfdr",
)
"""Every method of :func:`statsmodels.stats.multitest.multipletests`, by canonical name."""


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with its confidence interval."""

    estimate: float
    """The statistic on the original samples."""
    low: float
    """Lower bound."""
    high: float
    """Upper bound."""
    confidence: float
    """Nominal coverage, e.g. 0.95."""
    method: str
    """How the bounds were obtained: ``"bca"``, ``"percentile"`` or ``"point"`` (zero width)."""
    note: str = ""
    """Why the method differs from the one requested, if it does."""

    @classmethod
    def point(cls, estimate: float, confidence: float, note: str) -> ConfidenceInterval:
        """A zero-width interval at ``estimate`` (method ``"point"``), with the reason in ``note``."""
        return cls(estimate, estimate, estimate, confidence, "point", note)


def _sample(values: ArrayLike, name: str, *, min_size: int = 2) -> NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidParameterError(f"{name} must be one-dimensional; got shape {arr.shape}.")
    if arr.size < min_size:
        raise InvalidParameterError(f"{name} needs at least {min_size} values; got {arr.size}.")
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise InvalidParameterError(f"{name} contains NaN or infinite values; drop them first.")
    return arr
