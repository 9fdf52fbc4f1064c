"""Group fairness metrics on model outputs, with fairlearn's conventions.

Every function takes fairlearn's argument order ``(y_true, y_pred, *, sensitive_features)``
and, on binary labels, returns the value fairlearn 0.15 returns (tested). Additions:

* **Any number of groups**: difference = max - min, ratio = min / max over groups
  (``method="to_overall"`` compares each group with the pooled value instead).
* **Intersectional groups**: ``sensitive_features`` may be a DataFrame, a 2-D array or a
  dict of columns; groups are the observed combinations of their values.
* **Multiclass** labels (more than two distinct labels and ``pos_label=None``): each class
  is scored one-vs-rest and the per-class disparities are aggregated with ``average``:
  ``"worst"`` (default; the largest difference / smallest ratio over classes), ``"macro"``
  (their mean) or ``None`` (a ``pandas.Series`` indexed by class). A ``pos_label`` scores
  that class alone; two labels other than {0, 1} or {-1, 1} need one.
* **Small and degenerate groups**: groups with fewer than ``min_group_size`` examples are
  excluded (still pooled into the overall value) and named in a :class:`FairnessWarning`.
  A rate whose denominator is zero in a group (e.g. the true positive rate of a group whose
  ``y_true`` has one class) is NaN and left out of the comparison with a warning, where
  fairlearn silently uses 0 (through scikit-learn's ``confusion_matrix``) and
  ``precision_score`` uses its ``zero_division`` value.
* Continuous scores where labels are required, and inputs of different lengths, raise
  :class:`~neuronmap.errors.InvalidParameterError` naming what was received.

:class:`GroupReport` (via :func:`fairness_report`) computes every metric for one attribute
in one call, with stratified bootstrap confidence intervals.

Example:
    >>> from neuronmap.metrics.fairness import demographic_parity_difference
    >>> demographic_parity_difference(None, [1, 1, 0, 0], sensitive_features=["a", "a", "b", "b"])
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd

from neuronmap.errors import InvalidParameterError
from neuronmap.metrics._calibration import (
    calibration_error_by_group,
    calibration_error_difference,
    expected_calibration_error,
)
from neuronmap.metrics._disparity import (
    _AVERAGES,
    _METHODS,
    Average,
    FairnessWarning,
    Method,
    _aggregate,
    _average,
    _check_choice,
    _collapse,
    _evaluate,
    _extreme,
    _warn_undefined,
)
from neuronmap.metrics._groups import _as_labels, _as_weights
from neuronmap.metrics._report import GroupReport, fairness_report

__all__ = [
    "FairnessWarning",
    "GroupReport",
    "calibration_error_by_group",
    "calibration_error_difference",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equal_opportunity_difference",
    "equal_opportunity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "expected_calibration_error",
    "fairness_report",
    "false_negative_rate_difference",
    "false_positive_rate_difference",
    "predictive_parity_difference",
    "selection_rate",
]

Agg = Literal["worst_case", "mean"]
_F = TypeVar("_F", bound=Callable[..., Any])
_ARGS_DOC = """
        y_true: True labels, ``[n]``.{ignored}
        y_pred: Predicted labels, ``[n]`` (not scores: threshold them first).
        sensitive_features: Group of each example: a 1-D array/Series, or several columns
            (DataFrame, 2-D array, dict of columns) combined into intersectional groups.
        method: ``"between_groups"`` (max - min / min / max) or ``"to_overall"`` (largest
            gap to / smallest ratio with the pooled value), as fairlearn's ``MetricFrame``.
        pos_label: Positive class. ``None``: 1 for labels within {{0, 1}} or {{-1, 1}},
            every class one-vs-rest for more than two labels.
        average: How multiclass per-class values combine: ``"worst"``, ``"macro"`` or
            ``None`` (a Series per class). Ignored for binary labels.
        sample_weight: Optional non-negative weight per example.
        min_group_size: Groups with fewer examples are excluded (and named in a warning).
"""


def _shared_args(fn: _F) -> _F:
    """Fill the ``{args}`` slot of a docstring with the shared argument list.

    Like pandas' ``@doc`` decorator: nine functions share eight argument descriptions.
    """
    ignored = (
        " Ignored (accepted for fairlearn's signature)." if "demographic" in fn.__name__ else ""
    )
    fn.__doc__ = (fn.__doc__ or "").replace("{args}", _ARGS_DOC.format(ignored=ignored))
    return fn


def _disparity(
    y_true: Any,
    y_pred: Any,
    sensitive_features: Any,
    *,
    metrics: tuple[str, ...],
    kind: Literal["difference", "ratio"],
    method: Method,
    pos_label: Hashable | None,
    average: Average | None,
    sample_weight: Any,
    min_group_size: int,
    agg: Agg = "worst_case",
    name: str,
) -> float | pd.Series:
    """Disparity of one or two group rates (two: equalized odds, combined by ``agg``)."""
    _check_choice("method", method, _METHODS)
    _check_choice("average", average, _AVERAGES)
    _check_choice("agg", agg, ("worst_case", "mean"))
    needs_truth = metrics != ("selection_rate",)
    if needs_truth and y_true is None:
        raise InvalidParameterError(f"{name} needs y_true; got None.")
    ev = _evaluate(
        y_true if needs_truth else None,
        y_pred,
        sensitive_features,
        pos_label=pos_label,
        sample_weight=sample_weight,
        min_group_size=min_group_size,
    )
    ev.warn_excluded(stacklevel=3)
    _warn_undefined(ev, metrics, stacklevel=3)
    by_group, overall = ev.rates()
    per_metric = np.stack(
        [_aggregate(by_group[m], overall[m], kind=kind, method=method) for m in metrics]
    )
    worst: Literal["max", "min"] = "max" if kind == "difference" else "min"
    if agg == "worst_case":
        per_class = _extreme(per_metric, 0, worst)
    else:
        per_class = _average(per_metric.T, average="macro", worst=worst)
    return _collapse(per_class, ev, average=average, worst=worst)


def selection_rate(
    y_true: Any, y_pred: Any, *, pos_label: Hashable = 1, sample_weight: Any = None
) -> float:
    """Fraction of examples predicted as ``pos_label``, ``P(h(X) = pos_label)``.

    The group-wise quantity of demographic parity (Dwork et al. 2012, sec. 3.1). ``y_true``
    is accepted for a uniform signature and ignored, as in fairlearn.

    Args:
        y_true: Ignored.
        y_pred: Predicted labels, ``[n]``.
        pos_label: The label counted as selected.
        sample_weight: Optional non-negative weight per example.

    Returns:
        The (weighted) selection rate in [0, 1].

    Raises:
        InvalidParameterError: ``y_pred`` is empty or holds continuous scores.

    Example:
        >>> selection_rate(None, [1, 0, 1, 1])
        0.75
    """
    pred = _as_labels(y_pred, "y_pred")
    weights = _as_weights(sample_weight, len(pred))
    return float(np.dot(pred == pos_label, weights) / weights.sum())


@_shared_args
def demographic_parity_difference(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    pos_label: Hashable | None = None,
    average: Average | None = "worst",
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float | pd.Series:
    """Largest gap in selection rate between groups (statistical parity).

    ``max_a P(h(X)=1 | A=a) - min_a P(h(X)=1 | A=a)`` (Dwork et al. 2012, sec. 3.1;
    Calders & Verwer 2010). 0 means every group is selected at the same rate.

    Args:{args}
    Returns:
        The difference (a Series per class when multiclass with ``average=None``).

    Raises:
        InvalidParameterError: Bad labels, lengths, groups or options (see module docs).

    Example:
        >>> demographic_parity_difference(
        ...     None, [1, 0, 1, 1, 0, 0], sensitive_features=["a", "a", "a", "b", "b", "b"])
        0.3333333333333333
    """
    return _disparity(
        None, y_pred, sensitive_features, metrics=("selection_rate",), kind="difference",
        method=method, pos_label=pos_label, average=average, sample_weight=sample_weight,
        min_group_size=min_group_size, name="demographic_parity_difference",
    )  # fmt: skip


@_shared_args
def demographic_parity_ratio(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    pos_label: Hashable | None = None,
    average: Average | None = "worst",
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float | pd.Series:
    """Smallest over largest group selection rate (disparate impact ratio).

    ``min_a P(h(X)=1 | A=a) / max_a P(h(X)=1 | A=a)``; the "four-fifths rule" flags values
    below 0.8 (Feldman et al. 2015, eq. 1). NaN when every group's rate is 0.

    Args:{args}
    Returns:
        The ratio in [0, 1] (a Series per class when multiclass with ``average=None``).

    Raises:
        InvalidParameterError: Bad labels, lengths, groups or options (see module docs).

    Example:
        >>> demographic_parity_ratio(None, [1, 1, 0, 1], sensitive_features=[0, 0, 1, 1])
        0.5
    """
    return _disparity(
        None, y_pred, sensitive_features, metrics=("selection_rate",), kind="ratio",
        method=method, pos_label=pos_label, average=average, sample_weight=sample_weight,
        min_group_size=min_group_size, name="demographic_parity_ratio",
    )  # fmt: skip


@_shared_args
def equalized_odds_difference(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    pos_label: Hashable | None = None,
    average: Average | None = "worst",
    agg: Agg = "worst_case",
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float | pd.Series:
    """Larger of the true- and false-positive-rate differences between groups.

    Equalized odds asks ``P(h(X)=1 | A=a, Y=y)`` to be equal across groups for ``y`` in
    {0, 1} (Hardt, Price & Srebro 2016, Def. 1); this is
    ``max(TPR difference, FPR difference)`` (``agg="mean"``: their mean), as in fairlearn.

    Args:{args}        agg: ``"worst_case"`` (max of the two) or ``"mean"``.

    Returns:
        The difference (a Series per class when multiclass with ``average=None``).

    Raises:
        InvalidParameterError: Bad labels, lengths, groups or options (see module docs).

    Example:
        >>> equalized_odds_difference(
        ...     [1, 1, 0, 0, 1, 1, 0, 0], [1, 1, 1, 0, 1, 0, 0, 0],
        ...     sensitive_features=[0, 0, 0, 0, 1, 1, 1, 1])
        0.5
    """
    return _disparity(
        y_true, y_pred, sensitive_features,
        metrics=("true_positive_rate", "false_positive_rate"), kind="difference",
        method=method, pos_label=pos_label, average=average, agg=agg,
        sample_weight=sample_weight, min_group_size=min_group_size,
        name="equalized_odds_difference",
    )  # fmt: skip


@_shared_args
def equalized_odds_ratio(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    pos_label: Hashable | None = None,
    average: Average | None = "worst",
    agg: Agg = "worst_case",
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float | pd.Series:
    """Smaller of the true- and false-positive-rate ratios between groups.

    The ratio form of equalized odds (Hardt, Price & Srebro 2016, Def. 1):
    ``min(TPR ratio, FPR ratio)`` (``agg="mean"``: their mean), as in fairlearn.

    Args:{args}        agg: ``"worst_case"`` (min of the two) or ``"mean"``.

    Returns:
        The ratio in [0, 1] (a Series per class when multiclass with ``average=None``).

    Raises:
        InvalidParameterError: Bad labels, lengths, groups or options (see module docs).

    Example:
        >>> equalized_odds_ratio(
        ...     [1, 1, 0, 0, 1, 1, 0, 0], [1, 1, 1, 0, 1, 0, 0, 0],
        ...     sensitive_features=[0, 0, 0, 0, 1, 1, 1, 1])
        0.0
    """
    return _disparity(
        y_true, y_pred, sensitive_features,
        metrics=("true_positive_rate", "false_positive_rate"), kind="ratio",
        method=method, pos_label=pos_label, average=average, agg=agg,
        sample_weight=sample_weight, min_group_size=min_group_size,
        name="equalized_odds_ratio",
    )  # fmt: skip


@_shared_args
def equal_opportunity_difference(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    pos_label: Hashable | None = None,
    average: Average | None = "worst",
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float | pd.Series:
    """Largest gap in true positive rate ``P(h(X)=1 | A=a, Y=1)`` between groups.

    Equal opportunity (Hardt, Price & Srebro 2016, Def. 2).

    Args:{args}
    Returns:
        The difference (a Series per class when multiclass with ``average=None``).

    Raises:
        InvalidParameterError: Bad labels, lengths, groups or options (see module docs).

    Example:
        >>> equal_opportunity_difference(
        ...     [1, 1, 0, 1, 1, 0], [1, 1, 0, 1, 0, 0], sensitive_features=[0, 0, 0, 1, 1, 1])
        0.5
    """
    return _disparity(
        y_true, y_pred, sensitive_features, metrics=("true_positive_rate",),
        kind="difference", method=method, pos_label=pos_label, average=average,
        sample_weight=sample_weight, min_group_size=min_group_size,
        name="equal_opportunity_difference",
    )  # fmt: skip


@_shared_args
def equal_opportunity_ratio(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    pos_label: Hashable | None = None,
    average: Average | None = "worst",
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float | pd.Series:
    """Smallest over largest group true positive rate (Hardt, Price & Srebro 2016, Def. 2).

    Args:{args}
    Returns:
        The ratio in [0, 1] (a Series per class when multiclass with ``average=None``).

    Raises:
        InvalidParameterError: Bad labels, lengths, groups or options (see module docs).

    Example:
        >>> equal_opportunity_ratio(
        ...     [1, 1, 0, 1, 1, 0], [1, 1, 0, 1, 0, 0], sensitive_features=[0, 0, 0, 1, 1, 1])
        0.5
    """
    return _disparity(
        y_true, y_pred, sensitive_features, metrics=("true_positive_rate",), kind="ratio",
        method=method, pos_label=pos_label, average=average, sample_weight=sample_weight,
        min_group_size=min_group_size, name="equal_opportunity_ratio",
    )  # fmt: skip


@_shared_args
def false_positive_rate_difference(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    pos_label: Hashable | None = None,
    average: Average | None = "worst",
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float | pd.Series:
    """Largest gap in false positive rate ``P(h(X)=1 | A=a, Y=0)`` between groups.

    One half of error rate balance (Chouldechova 2017, sec. 2.1; Hardt et al. 2016, Def. 1).

    Args:{args}
    Returns:
        The difference (a Series per class when multiclass with ``average=None``).

    Raises:
        InvalidParameterError: Bad labels, lengths, groups or options (see module docs).

    Example:
        >>> false_positive_rate_difference(
        ...     [0, 0, 1, 0, 0, 1], [1, 0, 1, 0, 0, 1], sensitive_features=[0, 0, 0, 1, 1, 1])
        0.5
    """
    return _disparity(
        y_true, y_pred, sensitive_features, metrics=("false_positive_rate",),
        kind="difference", method=method, pos_label=pos_label, average=average,
        sample_weight=sample_weight, min_group_size=min_group_size,
        name="false_positive_rate_difference",
    )  # fmt: skip


@_shared_args
def false_negative_rate_difference(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    pos_label: Hashable | None = None,
    average: Average | None = "worst",
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float | pd.Series:
    """Largest gap in false negative rate ``P(h(X)=0 | A=a, Y=1)`` between groups.

    The other half of error rate balance (Chouldechova 2017, sec. 2.1). Equal to the
    equal-opportunity difference, since ``FNR = 1 - TPR``.

    Args:{args}
    Returns:
        The difference (a Series per class when multiclass with ``average=None``).

    Raises:
        InvalidParameterError: Bad labels, lengths, groups or options (see module docs).

    Example:
        >>> false_negative_rate_difference(
        ...     [1, 1, 0, 1, 1, 0], [1, 1, 0, 1, 0, 0], sensitive_features=[0, 0, 0, 1, 1, 1])
        0.5
    """
    return _disparity(
        y_true, y_pred, sensitive_features, metrics=("false_negative_rate",),
        kind="difference", method=method, pos_label=pos_label, average=average,
        sample_weight=sample_weight, min_group_size=min_group_size,
        name="false_negative_rate_difference",
    )  # fmt: skip


@_shared_args
def predictive_parity_difference(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    method: Method = "between_groups",
    pos_label: Hashable | None = None,
    average: Average | None = "worst",
    sample_weight: Any = None,
    min_group_size: int = 1,
) -> float | pd.Series:
    """Largest gap in precision (positive predictive value) between groups.

    Predictive parity asks ``P(Y=1 | h(X)=1, A=a)`` to be equal across groups
    (Chouldechova 2017, sec. 2.1). A group with no positive prediction has no precision
    (NaN, left out with a warning) rather than scikit-learn's ``zero_division`` value.

    Args:{args}
    Returns:
        The difference (a Series per class when multiclass with ``average=None``).

    Raises:
        InvalidParameterError: Bad labels, lengths, groups or options (see module docs).

    Example:
        >>> predictive_parity_difference(
        ...     [1, 0, 0, 1, 1, 0], [1, 1, 0, 1, 1, 0], sensitive_features=[0, 0, 0, 1, 1, 1])
        0.5
    """
    return _disparity(
        y_true, y_pred, sensitive_features, metrics=("precision",), kind="difference",
        method=method, pos_label=pos_label, average=average, sample_weight=sample_weight,
        min_group_size=min_group_size, name="predictive_parity_difference",
    )  # fmt: skip
