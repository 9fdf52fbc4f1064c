"""Group rates from sufficient statistics, and their between-group aggregation.

Shared by the fairlearn-compatible functions and by :class:`GroupReport`. Every array here
has the group axis second to last and the (one-vs-rest) class axis last, with any number
of leading axes (the bootstrap adds one), so a point estimate and ``B`` bootstrap
replicates go through exactly the same arithmetic.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from neuronmap.errors import InvalidParameterError
from neuronmap.metrics._groups import (
    _as_labels,
    _as_weights,
    _check_min_group_size,
    _encode_groups,
    _group_sums,
    _Groups,
    _layout,
    _resolve_classes,
    _row_statistics,
)

__all__ = ["FairnessWarning"]

Method = Literal["between_groups", "to_overall"]
Average = Literal["worst", "macro"]
_METHODS = ("between_groups", "to_overall")
_AVERAGES = ("worst", "macro", None)

CLASS_METRICS = (
    "selection_rate",
    "true_positive_rate",
    "false_positive_rate",
    "false_negative_rate",
    "true_negative_rate",
    "precision",
)
"""Per-class (one-vs-rest) metrics; all but ``selection_rate`` need ``y_true``."""


class FairnessWarning(UserWarning):
    """A group was excluded, or a group's metric is undefined and was left out."""


def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise InvalidParameterError(f"{name} must be one of {list(allowed)!r}; got {value!r}.")


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where the denominator is (numerically) zero."""
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    ok = np.broadcast_to(den > 1e-12, out.shape)
    np.divide(num, den, out=out, where=ok)
    return out


def _rates(sums: np.ndarray, n_classes: int, n_bins: int) -> dict[str, np.ndarray]:
    """Every group metric from summed statistics ``[..., G, K]``, each ``[..., G, C]``.

    Confusion-matrix rates follow Hardt, Price & Srebro (2016, sec. 2) and Chouldechova
    (2017, sec. 2.1); the calibration error is the expected calibration error of Naeini
    et al. (2015) as written by Guo et al. (2017, eq. 3),
    ``ECE = sum_b |B_b| / n * |acc(B_b) - conf(B_b)| = sum_b |hits_b - conf_b| / n``.
    """
    lay = _layout(n_classes, n_bins)
    n = sums[..., lay["n"]][..., None]
    pred, true, tp = sums[..., lay["pred"]], sums[..., lay["true"]], sums[..., lay["tp"]]
    neg = n - true
    out = {
        "selection_rate": _divide(pred, n),
        "true_positive_rate": _divide(tp, true),
        "false_positive_rate": _divide(pred - tp, neg),
        "false_negative_rate": _divide(true - tp, true),
        "true_negative_rate": _divide(neg - pred + tp, neg),
        "precision": _divide(tp, pred),
        "accuracy": _divide(sums[..., lay["correct"]][..., None], n),
    }
    if n_bins:
        gap = np.abs(sums[..., lay["bin_hit"]] - sums[..., lay["bin_conf"]]).sum(axis=-1)
        out["calibration_error"] = _divide(gap[..., None], n)
    return out


def _reasons(sums: np.ndarray, classes: Sequence[Hashable], n_bins: int) -> dict[str, np.ndarray]:
    """Why each undefined group metric is NaN: ``{metric: [G, C] reasons}``, ``""`` if defined.

    Selection rate, accuracy and calibration error only divide by the group size, which
    is never zero, so they have no entry.
    """
    lay = _layout(len(classes), n_bins)
    n = sums[:, lay["n"]][:, None]
    pred, true = sums[:, lay["pred"]], sums[:, lay["true"]]
    one_class = "no examples with y_true {op} {c!r} (y_true has one class)"
    specs = {
        "true_positive_rate": (true, one_class.replace("{op}", "==")),
        "false_negative_rate": (true, one_class.replace("{op}", "==")),
        "false_positive_rate": (n - true, one_class.replace("{op}", "!=")),
        "true_negative_rate": (n - true, one_class.replace("{op}", "!=")),
        "precision": (pred, "no examples predicted as {c!r}"),
    }
    why: dict[str, np.ndarray] = {}
    for metric, (den, text) in specs.items():
        why[metric] = np.array(
            [[text.format(c=c) if d <= 1e-12 else "" for c, d in zip(classes, row, strict=True)]
             for row in den],
            dtype=object,
        )  # fmt: skip
    return why


def _extreme(values: np.ndarray, axis: int, kind: Literal["max", "min"]) -> np.ndarray:
    """NaN-ignoring max/min that returns NaN (without a warning) for all-NaN slices."""
    finite = np.isfinite(values)
    fill = -np.inf if kind == "max" else np.inf
    reduce = np.max if kind == "max" else np.min
    res = reduce(np.where(finite, values, fill), axis=axis)
    return np.where(finite.any(axis=axis), res, np.nan)


def _aggregate(
    by_group: np.ndarray,
    overall: np.ndarray,
    *,
    kind: Literal["difference", "ratio"],
    method: Method,
) -> np.ndarray:
    """Difference (max - min) or ratio (min / max) across the group axis (-2).

    ``to_overall`` follows fairlearn's ``MetricFrame``: the largest ``|group - overall|``,
    or the smallest ``group / overall`` folded below one. Undefined (NaN) groups are skipped.
    """
    if method == "between_groups":
        hi, lo = _extreme(by_group, -2, "max"), _extreme(by_group, -2, "min")
        return hi - lo if kind == "difference" else _divide(lo, hi)
    ref = overall[..., None, :]
    if kind == "difference":
        return _extreme(np.abs(by_group - ref), -2, "max")
    ratio = _divide(by_group, np.broadcast_to(ref, by_group.shape))
    with np.errstate(divide="ignore"):
        folded = np.where(ratio > 1, 1 / ratio, ratio)
    return _extreme(folded, -2, "min")


def _average(
    values: np.ndarray, *, average: Average | None, worst: Literal["max", "min"]
) -> np.ndarray:
    """Collapse the class axis: the worst class, or the macro mean over defined classes."""
    if average == "worst":
        return _extreme(values, -1, worst)
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    return _divide(total, finite.sum(axis=-1))


@dataclass(frozen=True)
class _Evaluation:
    """Validated inputs reduced to per-group sums: everything a metric needs."""

    groups: _Groups
    classes: list[Hashable]
    multiclass: bool
    stats: np.ndarray
    sums: np.ndarray
    included: np.ndarray
    n_bins: int

    @property
    def excluded(self) -> dict[Hashable, int]:
        """Groups below ``min_group_size`` and their sizes."""
        idx = np.flatnonzero(~self.included)
        return {self.groups.key(int(i)): int(self.groups.sizes[i]) for i in idx}

    def rates(
        self, sums: np.ndarray | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(by_group, overall)`` rates for included groups; ``sums`` may carry a bootstrap axis."""
        sums = self.sums if sums is None else sums
        by_group = _rates(sums[..., self.included, :], len(self.classes), self.n_bins)
        overall = _rates(sums.sum(axis=-2, keepdims=True), len(self.classes), self.n_bins)
        return by_group, {k: v[..., 0, :] for k, v in overall.items()}

    def warn_excluded(self, stacklevel: int) -> None:
        if self.excluded:
            warnings.warn(
                f"Excluded {len(self.excluded)} group(s) below min_group_size: "
                f"{self.excluded!r} (group: size). They still count in the overall value.",
                FairnessWarning,
                stacklevel=stacklevel + 1,
            )


def _evaluate(
    y_true: Any,
    y_pred: Any,
    sensitive_features: Any,
    *,
    pos_label: Hashable | None,
    sample_weight: Any,
    min_group_size: int,
    y_score: Any = None,
    n_bins: int = 0,
    pred_name: str = "y_pred",
) -> _Evaluation:
    """Validate inputs and reduce them to per-group sums (see :mod:`._groups`).

    ``pred_name`` names ``y_pred`` in error messages; the calibration functions pass their
    ``y_true`` as ``y_pred`` (labels are only needed to count examples there).
    """
    _check_min_group_size(min_group_size)
    pred = _as_labels(y_pred, pred_name)
    n = len(pred)
    true = None if y_true is None else _as_labels(y_true, "y_true", n=n, reference=pred_name)
    weights = _as_weights(sample_weight, n, reference=pred_name)
    groups = _encode_groups(sensitive_features, n, reference=pred_name)
    label_sets = [pred] if true is None else [true, pred]
    classes, multiclass = _resolve_classes(label_sets, pos_label)
    confidence = hit = None
    if y_score is not None:
        confidence, hit = _confidence_and_hit(y_score, true, pred, classes, multiclass)
    stats = _row_statistics(
        true, pred, classes, weights, confidence=confidence, hit=hit, n_bins=n_bins
    )
    sums = _group_sums(stats, groups.codes, len(groups.index))
    return _Evaluation(
        groups=groups,
        classes=classes,
        multiclass=multiclass,
        stats=stats,
        sums=sums,
        included=groups.sizes >= min_group_size,
        n_bins=n_bins if y_score is not None else 0,
    )


def _confidence_and_hit(
    y_score: Any,
    y_true: np.ndarray | None,
    y_pred: np.ndarray,
    classes: Sequence[Hashable],
    multiclass: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and correctness per example for the calibration error.

    1-D scores are ``P(y = positive)`` and are compared with ``y_true == positive``
    (binary reliability diagram); 2-D scores ``[n, C]`` (column ``j`` = label ``j``) give the
    top-label confidence ``max_j p_j`` compared with ``argmax_j p_j == y_true`` (Guo et al.
    2017, sec. 2).
    """
    if y_true is None:
        raise InvalidParameterError("y_true is required to compute the calibration error.")
    score = np.asarray(y_score, dtype=float)
    if score.ndim == 2 and score.shape[1] == 1:
        score = score[:, 0]
    if score.shape[0] != len(y_true):
        raise InvalidParameterError(
            f"y_score has {score.shape[0]} entries but y_true has {len(y_true)}; every input "
            "must have one entry per example."
        )
    if not np.all(np.isfinite(score)) or score.min() < 0 or score.max() > 1:
        raise InvalidParameterError(
            "y_score must hold probabilities in [0, 1] (apply a sigmoid/softmax to logits); "
            f"got values in [{np.nanmin(score):.3g}, {np.nanmax(score):.3g}]."
        )
    if score.ndim == 1:
        if multiclass:
            raise InvalidParameterError(
                "1-D y_score is P(positive class) but the labels are multiclass "
                f"({list(classes)!r}); pass [n, n_classes] probabilities or a pos_label."
            )
        return score, (y_true == classes[0]).astype(float)
    if score.ndim != 2:
        raise InvalidParameterError(f"y_score must be 1-D or 2-D; got shape {score.shape}.")
    labels = np.unique(y_true)
    if labels.dtype.kind not in "iub" or labels.min() < 0 or labels.max() >= score.shape[1]:
        raise InvalidParameterError(
            "2-D y_score needs integer labels 0..n_classes-1 (column j = label j); got labels "
            f"{labels.tolist()!r} for {score.shape[1]} columns."
        )
    return score.max(axis=1), (score.argmax(axis=1) == y_true).astype(float)


def _class_index(classes: Sequence[Hashable]) -> pd.Index:
    return pd.Index(list(classes), name="class")


def _collapse(
    per_class: np.ndarray, ev: _Evaluation, *, average: Average | None, worst: Literal["max", "min"]
) -> float | pd.Series:
    """Point value over classes: the single value (binary), averaged, or per class."""
    _check_choice("average", average, _AVERAGES)
    if not ev.multiclass:
        return float(per_class[0])
    if average is None:
        return pd.Series(per_class, index=_class_index(ev.classes), name="value")
    return float(_average(per_class, average=average, worst=worst))


def _warn_undefined(ev: _Evaluation, metrics: Sequence[str], stacklevel: int) -> None:
    by_group, _ = ev.rates()
    reasons = _reasons(ev.sums[ev.included], ev.classes, ev.n_bins)
    kept = np.flatnonzero(ev.included)
    for metric in metrics:
        bad = ~np.isfinite(by_group[metric]).all(axis=-1)
        if bad.any():
            detail = {
                ev.groups.key(kept[i]): "; ".join(r for r in reasons[metric][i] if r)
                for i in np.flatnonzero(bad)
            }
            warnings.warn(
                f"{metric} is undefined for {int(bad.sum())} group(s), left out of the "
                f"comparison: {detail!r}.",
                FairnessWarning,
                stacklevel=stacklevel + 1,
            )
