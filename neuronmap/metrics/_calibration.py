"""Expected calibration error, overall and within sensitive groups.

Calibration within groups (Kleinberg, Mullainathan & Raghavan 2017, sec. 1.1; Pleiss et
al. 2017) asks that a score mean the same thing for every group. It is measured here with
the expected calibration error (Naeini, Cooper & Hauskrecht 2015; Guo et al. 2017, eq. 3)
computed per group from the same sufficient statistics as the other group metrics, so the
values also feed :func:`neuronmap.metrics.fairness.fairness_report` and its bootstrap.
Public names are re-exported by :mod:`neuronmap.metrics.fairness`.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd

from neuronmap.errors import InvalidParameterError
from neuronmap.metrics._disparity import (
    _METHODS,
    Method,
    _aggregate,
    _check_choice,
    _evaluate,
    _Evaluation,
)
from neuronmap.metrics._groups import _as_labels

__all__ = [
    "calibration_error_by_group",
    "calibration_error_difference",
    "expected_calibration_error",
]


def _calibration_evaluation(
    y_true: Any,
    y_score: Any,
    sensitive_features: Any,
    *,
    n_bins: int,
    pos_label: Hashable | None,
    sample_weight: Any,
    min_group_size: int,
) -> _Evaluation:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise InvalidParameterError(f"n_bins must be an int >= 1; got {n_bins!r}.")
    return _evaluate(
        y_true, y_true, sensitive_features, pos_label=pos_label, sample_weight=sample_weight,
        min_group_size=min_group_size, y_score=y_score, n_bins=n_bins, pred_name="y_true",
    )  # fmt: skip


def expected_calibration_error(
    y_true: Any,
    y_score: Any,
    *,
    n_bins: int = 10,
    pos_label: Hashable | None = None,
    sample_weight: Any = None,
) -> float:
    """Expected calibration error over ``n_bins`` equal-width confidence bins.

    ``ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)|`` (Naeini, Cooper & Hauskrecht 2015;
    Guo et al. 2017, eq. 3). Bins match ``sklearn.calibration.calibration_curve``
    (``strategy="uniform"``). 1-D ``y_score`` is ``P(y = pos_label)`` and accuracy is the
    positive fraction (a binary reliability diagram); ``[n, C]`` probabilities give the
    top-label ECE (confidence ``max_j p_j``, accuracy ``argmax_j p_j == y``).

    Args:
        y_true: True labels, ``[n]`` (integers ``0..C-1`` for 2-D scores).
        y_score: Probabilities, ``[n]`` or ``[n, C]``, within [0, 1].
        n_bins: Number of equal-width bins on [0, 1].
        pos_label: Positive class for 1-D scores (``None``: 1 for {0, 1} / {-1, 1} labels).
        sample_weight: Optional non-negative weight per example.

    Returns:
        The ECE in [0, 1].

    Raises:
        InvalidParameterError: Scores outside [0, 1], bad shapes, lengths or ``n_bins``.

    Example:
        >>> round(expected_calibration_error([1, 0, 1, 1], [0.9, 0.9, 0.2, 0.2], n_bins=2), 6)
        0.6
    """
    y = _as_labels(y_true, "y_true")
    return float(
        calibration_error_by_group(
            y, y_score, sensitive_features=np.zeros(len(y), dtype=int), n_bins=n_bins,
            pos_label=pos_label, sample_weight=sample_weight,
        ).iloc[0]
    )  # fmt: skip


def calibration_error_by_group(
    y_true: Any,
    y_score: Any,
    *,
    sensitive_features: Any,
    n_bins: int = 10,
    pos_label: Hashable | None = None,
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> pd.Series:
    """Expected calibration error of each group (calibration within groups).

    Calibration within groups (Kleinberg, Mullainathan & Raghavan 2017, sec. 1.1; Pleiss
    et al. 2017) measured per group with the ECE of :func:`expected_calibration_error`.

    Args:
        y_true: True labels, ``[n]``.
        y_score: Probabilities, ``[n]`` (positive class) or ``[n, C]``.
        sensitive_features: Group of each example (one or several columns).
        n_bins: Number of equal-width bins on [0, 1].
        pos_label: Positive class for 1-D scores.
        sample_weight: Optional non-negative weight per example.
        min_group_size: Groups with fewer examples are excluded (and named in a warning).

    Returns:
        ECE per group, indexed like fairlearn's ``MetricFrame.by_group``.

    Raises:
        InvalidParameterError: Scores outside [0, 1], bad shapes, lengths or options.

    Example:
        >>> calibration_error_by_group([1, 0, 1, 0], [1.0, 0.0, 0.9, 0.9],
        ...     sensitive_features=["a", "a", "b", "b"]).round(6).tolist()
        [0.0, 0.4]
    """
    ev = _calibration_evaluation(
        y_true, y_score, sensitive_features, n_bins=n_bins, pos_label=pos_label,
        sample_weight=sample_weight, min_group_size=min_group_size,
    )  # fmt: skip
    ev.warn_excluded(stacklevel=2)
    by_group, _ = ev.rates()
    index = ev.groups.index[ev.included]
    return pd.Series(by_group["calibration_error"][:, 0], index=index, name="calibration_error")


def calibration_error_difference(
    y_true: Any,
    y_score: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    n_bins: int = 10,
    pos_label: Hashable | None = None,
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float:
    """Largest gap in expected calibration error between groups.

    See :func:`calibration_error_by_group`; ``method="to_overall"`` compares each group's
    ECE with the ECE of all examples pooled.

    Args:
        y_true: True labels, ``[n]``.
        y_score: Probabilities, ``[n]`` (positive class) or ``[n, C]``.
        sensitive_features: Group of each example (one or several columns).
        method: ``"between_groups"`` or ``"to_overall"``.
        n_bins: Number of equal-width bins on [0, 1].
        pos_label: Positive class for 1-D scores.
        sample_weight: Optional non-negative weight per example.
        min_group_size: Groups with fewer examples are excluded (and named in a warning).

    Returns:
        The difference in [0, 1].

    Raises:
        InvalidParameterError: Scores outside [0, 1], bad shapes, lengths or options.

    Example:
        >>> round(calibration_error_difference([1, 0, 1, 0], [1.0, 0.0, 0.9, 0.9],
        ...     sensitive_features=["a", "a", "b", "b"]), 6)
        0.4
    """
    _check_choice("method", method, _METHODS)
    ev = _calibration_evaluation(
        y_true, y_score, sensitive_features, n_bins=n_bins, pos_label=pos_label,
        sample_weight=sample_weight, min_group_size=min_group_size,
    )  # fmt: skip
    ev.warn_excluded(stacklevel=2)
    by_group, overall = ev.rates()
    metric = "calibration_error"
    return float(_aggregate(by_group[metric], overall[metric], kind="difference", method=method)[0])
