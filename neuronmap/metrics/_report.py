"""Disaggregated fairness results with stratified bootstrap confidence intervals.

:class:`GroupReport` mirrors fairlearn's ``MetricFrame`` (``overall``, ``by_group``,
``difference()``, ``ratio()``) and gives every aggregate a CI twin. The intervals are
percentile bootstrap intervals (Efron & Tibshirani 1993, eq. 13.5) from resamples drawn
*within* each sensitive group, so every replicate keeps each group's size (a stratified
bootstrap, Davison & Hinkley 1997, sec. 3.8), as the group sizes of a probe set are fixed
by design.

A percentile interval of a max - min difference (or of a min / max ratio) never contains 0
(1) when the groups are equal, because every replicate's gap is positive. The intervals of
the between-group differences and ratios are therefore built from *simultaneous* intervals
of every pairwise difference ``r_i - r_j`` (of ``log r_i - log r_j`` for ratios): a
studentised max-|t| bootstrap band (Efron & Tibshirani 1993, sec. 12.5; the max-t method of
Westfall & Young 1993 applied to bootstrap replicates), whose critical value is the
``confidence`` quantile over replicates of ``max_ij |d*_ij - d_ij| / se_ij``. When every
pairwise difference lies in its band, the largest gap lies in
``[max(0, max_ij |d_ij| - q se_ij), max_ij |d_ij| + q' se_ij]``. The lower bound needs the
simultaneous ``q`` (with equal groups the gap is 0 and any pair may overshoot it); the upper
bound fails only when the pair that holds the gap is underestimated, so ``q'`` is the normal
one-sided quantile at the level the lower bound leaves, ``alpha - P(Z > q)``. With two groups
this is the signed-difference interval folded to absolute values; with one dominant pair or
equal groups the coverage is nominal (tests/calibration). ``interval="percentile"`` keeps the
plain percentile interval.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from neuronmap.errors import InvalidParameterError
from neuronmap.metrics._disparity import (
    _AVERAGES,
    _METHODS,
    CLASS_METRICS,
    Average,
    Method,
    _aggregate,
    _average,
    _check_choice,
    _evaluate,
    _Evaluation,
    _extreme,
    _reasons,
)
from neuronmap.metrics._groups import _stratified_bootstrap_sums
from neuronmap.stats import ConfidenceInterval

__all__ = ["GroupReport", "fairness_report"]

_SUMMARY: dict[str, tuple[tuple[str, ...], Literal["difference", "ratio"]]] = {
    "demographic_parity_difference": (("selection_rate",), "difference"),
    "demographic_parity_ratio": (("selection_rate",), "ratio"),
    "equalized_odds_difference": (("true_positive_rate", "false_positive_rate"), "difference"),
    "equalized_odds_ratio": (("true_positive_rate", "false_positive_rate"), "ratio"),
    "equal_opportunity_difference": (("true_positive_rate",), "difference"),
    "equal_opportunity_ratio": (("true_positive_rate",), "ratio"),
    "false_positive_rate_difference": (("false_positive_rate",), "difference"),
    "false_negative_rate_difference": (("false_negative_rate",), "difference"),
    "predictive_parity_difference": (("precision",), "difference"),
    "predictive_parity_ratio": (("precision",), "ratio"),
    "accuracy_difference": (("accuracy",), "difference"),
    "calibration_error_difference": (("calibration_error",), "difference"),
}
"""Named fairness metrics: the group metrics they compare and how (worst case over two)."""


def _columns(ev: _Evaluation, has_truth: bool) -> list[tuple[str, str, int]]:
    """``(column name, metric, class position)``; multiclass columns are ``metric/class``."""
    metrics = list(CLASS_METRICS) if has_truth else ["selection_rate"]
    cols = [
        (f"{m}/{c}" if ev.multiclass else m, m, j)
        for m in metrics
        for j, c in enumerate(ev.classes)
    ]
    if has_truth:
        cols.append(("accuracy", "accuracy", 0))
    if ev.n_bins:
        cols.append(("calibration_error", "calibration_error", 0))
    return cols


def _matrix(rates: dict[str, np.ndarray], cols: list[tuple[str, str, int]]) -> np.ndarray:
    """Stack the chosen rate columns into ``[..., G, M]``."""
    return np.stack([rates[m][..., j] for _, m, j in cols], axis=-1)


Interval = Literal["simultaneous", "percentile"]
_INTERVALS = ("simultaneous", "percentile")


def _pairwise(values: np.ndarray, kind: Literal["difference", "ratio"]) -> np.ndarray:
    """``[..., P, M]`` pairwise differences ``v_i - v_j`` (``i < j``) over the group axis (-2)."""
    if kind == "ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.log(values)
    i, j = np.triu_indices(values.shape[-2], k=1)
    with np.errstate(invalid="ignore"):  # -inf - -inf: both rates 0 in a replicate, no ratio
        return values[..., i, :] - values[..., j, :]


def _simultaneous(
    point: np.ndarray, reps: np.ndarray, columns: list[int], confidence_level: float,
    kind: Literal["difference", "ratio"],
) -> tuple[float, float] | None:  # fmt: skip
    """Interval of the worst between-group gap over ``columns`` from a max-|t| bootstrap band.

    ``point`` is ``[G, M]`` group values and ``reps`` ``[B, G, M]`` their replicates. Returns
    the bounds of ``max |d|`` (difference) or ``exp(-max |log ratio|)`` (ratio); NaN when no
    pair of groups is defined, ``None`` for a ratio with a zero group value.
    """
    if kind == "ratio" and np.any(point[:, columns] <= 0):
        return None  # a zero rate has no log ratio: the caller falls back to the percentile interval
    d = _pairwise(point[:, columns], kind).ravel()
    d_reps = _pairwise(reps[:, :, columns], kind).reshape(len(reps), -1)
    finite = np.isfinite(d) & (np.isfinite(d_reps).mean(axis=0) > 0.5 if len(reps) else False)
    if not finite.any():
        return float("nan"), float("nan")
    d, d_reps = d[finite], d_reps[:, finite]
    with np.errstate(invalid="ignore"):
        se = np.nanstd(np.where(np.isfinite(d_reps), d_reps, np.nan), axis=0, ddof=1)
    se = np.where(np.isfinite(se), se, 0.0)
    dev = np.abs(d_reps - d)
    t = np.where(se > 0, dev / np.where(se > 0, se, 1.0), np.where(dev > 0, np.inf, 0.0))
    t_max = np.max(np.where(np.isfinite(d_reps), t, 0.0), axis=1)
    q = float(np.quantile(t_max, confidence_level, method="higher"))
    if not np.isfinite(q):  # a pair with zero spread but moving replicates: fall back to the spread
        q = float(np.quantile(t_max[np.isfinite(t_max)], confidence_level)) if np.isfinite(t_max).any() else 0.0
    # The lower bound must clear every pair at once (equal groups: the gap is 0 and any pair may
    # exceed it); the upper bound only fails when the pair holding the true gap is under-
    # estimated, so its critical value spends what the lower bound leaves of alpha on that side.
    from scipy.stats import norm

    q_high = float(norm.isf(max((1.0 - confidence_level) - float(norm.sf(q)), 1e-12)))
    low = max(0.0, float(np.max(np.abs(d) - q * se)))
    high = float(np.max(np.abs(d) + min(q, q_high) * se))
    if kind == "difference":
        return low, high
    return float(np.exp(-high)), float(np.exp(-low))


def _interval(replicates: np.ndarray, confidence_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bounds over the first axis, ignoring undefined (NaN) replicates."""
    shape = replicates.shape[1:]
    finite = np.isfinite(replicates)
    empty = ~finite.any(axis=0) if len(replicates) else np.ones(shape, dtype=bool)
    if empty.all():
        return np.full(shape, np.nan), np.full(shape, np.nan)
    # all-NaN columns get zeros so nanquantile stays quiet; they are reset to NaN below
    clean = np.where(finite | empty, np.where(finite, replicates, 0.0), np.nan)
    alpha = 1.0 - confidence_level
    low, high = np.nanquantile(clean, [alpha / 2, 1 - alpha / 2], axis=0)
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


@dataclass(frozen=True)
class GroupReport:
    """Every group metric for one sensitive attribute, with bootstrap CIs.

    Built by :func:`fairness_report`. Columns are ``selection_rate``,
    ``true_positive_rate``, ``false_positive_rate``, ``false_negative_rate``,
    ``true_negative_rate``, ``precision`` (``metric/class`` per class when multiclass),
    ``accuracy`` and, given scores, ``calibration_error``; without ``y_true`` only
    ``selection_rate``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 200); group = np.repeat(["a", "b"], 100)
        >>> report = fairness_report(y, y, sensitive_features=group, random_state=0)
        >>> float(report.difference()["true_positive_rate"])
        0.0
        >>> list(report.summary().columns)
        ['estimate', 'low', 'high']
    """

    overall: pd.Series
    """Each metric on all examples pooled (including excluded groups)."""
    overall_ci: pd.DataFrame
    """``low`` / ``high`` bounds of :attr:`overall`, one row per metric."""
    by_group: pd.DataFrame
    """One row per included group (a ``MultiIndex`` for intersections), one column per metric."""
    by_group_ci: pd.DataFrame
    """Bounds of :attr:`by_group`; columns are ``(metric, "low" | "high")``."""
    group_sizes: pd.Series
    """Examples per group, excluded groups included."""
    excluded_groups: dict[Hashable, int]
    """Groups with fewer than ``min_group_size`` examples, with their sizes."""
    undefined: dict[str, dict[Hashable, str]]
    """``{metric: {group: reason}}`` for every NaN in :attr:`by_group`."""
    multiclass: bool
    """Whether classes were scored one-vs-rest (columns ``metric/class``)."""
    classes: tuple[Hashable, ...]
    """Classes scored (the positive label alone when binary)."""
    confidence_level: float
    """Nominal coverage of every interval."""
    n_resamples: int
    """Bootstrap resamples behind every interval."""
    _group_replicates: np.ndarray = field(repr=False)
    _overall_replicates: np.ndarray = field(repr=False)

    def _aggregates(
        self, kind: Literal["difference", "ratio"], method: Method
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_choice("method", method, _METHODS)
        point = _aggregate(
            self.by_group.to_numpy(float), self.overall.to_numpy(float), kind=kind, method=method
        )
        reps = _aggregate(
            self._group_replicates, self._overall_replicates, kind=kind, method=method
        )
        return point, reps

    def _series_ci(self, reps: np.ndarray) -> pd.DataFrame:
        low, high = _interval(reps, self.confidence_level)
        return pd.DataFrame({"low": low, "high": high}, index=self.by_group.columns)

    def difference(self, method: Method = "between_groups") -> pd.Series:
        """Max - min over groups per metric (``to_overall``: largest gap to the pooled value)."""
        return pd.Series(self._aggregates("difference", method)[0], index=self.by_group.columns)

    def difference_ci(self, method: Method = "between_groups", *, interval: Interval = "simultaneous") -> pd.DataFrame:
        """Bootstrap bounds of :meth:`difference`, columns ``low`` / ``high``.

        ``interval="simultaneous"`` (``between_groups`` only) folds the max-|t| band of the
        pairwise differences (module docs), which covers 0 when the groups are equal;
        ``"percentile"`` is the percentile interval of the replicated max - min gap.
        """
        return self._gap_ci("difference", method, interval)

    def ratio(self, method: Method = "between_groups") -> pd.Series:
        """Min / max over groups per metric (``to_overall``: smallest ratio with the pooled value)."""
        return pd.Series(self._aggregates("ratio", method)[0], index=self.by_group.columns)

    def ratio_ci(self, method: Method = "between_groups", *, interval: Interval = "simultaneous") -> pd.DataFrame:
        """Bootstrap bounds of :meth:`ratio`, columns ``low`` / ``high`` (see :meth:`difference_ci`)."""
        return self._gap_ci("ratio", method, interval)

    def _gap_ci(self, kind: Literal["difference", "ratio"], method: Method, interval: Interval) -> pd.DataFrame:
        _check_choice("interval", interval, _INTERVALS)
        frame = self._series_ci(self._aggregates(kind, method)[1])
        if interval == "simultaneous" and method == "between_groups":
            point = self.by_group.to_numpy(float)
            for j, col in enumerate(self.by_group.columns):
                bounds = _simultaneous(point, self._group_replicates, [j], self.confidence_level, kind)
                if bounds is not None:
                    frame.loc[col] = bounds
        return frame

    def signed_difference(self, metric: str) -> pd.DataFrame:
        """Every pairwise difference of one group metric, with simultaneous max-|t| bounds.

        Args:
            metric: A column of :attr:`by_group` (``"true_positive_rate"``, ...).

        Returns:
            One row per pair ``(group_a, group_b)`` with ``difference = a - b``, ``low``
            and ``high``; with two groups the single row is the signed difference.

        Raises:
            InvalidParameterError: ``metric`` is not a column of :attr:`by_group`.
        """
        cols = list(self.by_group.columns)
        if metric not in cols:
            raise InvalidParameterError(f"Unknown group metric {metric!r}; this report has {cols!r}.")
        j = cols.index(metric)
        point = self.by_group.to_numpy(float)[:, [j]]
        reps = self._group_replicates[:, :, [j]]
        d, d_reps = _pairwise(point, "difference")[:, 0], _pairwise(reps, "difference")[..., 0]
        with np.errstate(invalid="ignore"):
            se = np.nanstd(d_reps, axis=0, ddof=1) if len(reps) > 1 else np.full(d.shape, np.nan)
        dev = np.abs(d_reps - d)
        t_max = np.nanmax(np.where(se > 0, dev / np.where(se > 0, se, 1.0), 0.0), axis=1) if len(reps) else []
        q = float(np.quantile(t_max, self.confidence_level, method="higher")) if len(reps) else np.nan
        i, k = np.triu_indices(len(point), k=1)
        keys = list(self.by_group.index)
        return pd.DataFrame({"group_a": [keys[a] for a in i], "group_b": [keys[b] for b in k], "difference": d,
                             "low": d - q * se, "high": d + q * se})

    def _named(self, name: str, method: Method, average: Average) -> tuple[float, np.ndarray]:
        metrics, kind = _SUMMARY[name]
        worst: Literal["max", "min"] = "max" if kind == "difference" else "min"
        point, reps = self._aggregates(kind, method)
        cols = list(self.by_group.columns)

        def collapse(values: np.ndarray) -> np.ndarray:
            per_metric = [
                values[..., [i for i, c in enumerate(cols) if c.split("/")[0] == m]]
                for m in metrics
            ]
            per_class = _extreme(np.stack(per_metric), 0, worst)
            return _average(per_class, average=average, worst=worst)

        return float(collapse(point)), collapse(reps)

    def summary(
        self, method: Method = "between_groups", *, average: Average = "worst",
        interval: Interval = "simultaneous",
    ) -> pd.DataFrame:  # fmt: skip
        """Named fairness metrics (``demographic_parity_difference`` ...) with CI bounds.

        Equalized odds takes the worst of the TPR and FPR disparities, as fairlearn's
        ``agg="worst_case"``; multiclass values combine classes by ``average``.

        Args:
            method: ``"between_groups"`` or ``"to_overall"``.
            average: ``"worst"`` or ``"macro"`` over classes (multiclass only).
            interval: ``"simultaneous"`` (default; module docs) or ``"percentile"``. The
                simultaneous interval needs ``between_groups`` and, for multiclass
                reports, ``average="worst"``; otherwise the percentile interval is used.

        Returns:
            One row per available metric; columns ``estimate``, ``low``, ``high``.
        """
        _check_choice("average", average, [a for a in _AVERAGES if a is not None])
        _check_choice("interval", interval, _INTERVALS)
        joint = interval == "simultaneous" and method == "between_groups" and (
            not self.multiclass or average == "worst"
        )
        present = {c.split("/")[0] for c in self.by_group.columns}
        rows = {}
        cols = list(self.by_group.columns)
        for name, (metrics, kind) in _SUMMARY.items():
            if set(metrics) <= present:
                point, reps = self._named(name, method, average)
                low, high = _interval(reps[:, None], self.confidence_level)
                bounds = (float(low[0]), float(high[0]))
                if joint:
                    picked = [i for i, c in enumerate(cols) if c.split("/")[0] in metrics]
                    joint_bounds = _simultaneous(self.by_group.to_numpy(float), self._group_replicates, picked,
                                                 self.confidence_level, kind)
                    bounds = bounds if joint_bounds is None or not np.isfinite(point) else joint_bounds
                rows[name] = (point, *bounds)
        return pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "low", "high"])

    def interval(
        self, name: str, method: Method = "between_groups", *, average: Average = "worst",
        interval: Interval = "simultaneous",
    ) -> ConfidenceInterval:  # fmt: skip
        """One named fairness metric of :meth:`summary` as a ``ConfidenceInterval``.

        Raises:
            InvalidParameterError: ``name`` is not a named metric available in this report.
        """
        table = self.summary(method, average=average, interval=interval)
        if name not in table.index:
            raise InvalidParameterError(
                f"Unknown or unavailable fairness metric {name!r}; this report has "
                f"{list(table.index)!r}."
            )
        row = table.loc[name]
        return ConfidenceInterval(
            estimate=float(row["estimate"]), low=float(row["low"]), high=float(row["high"]),
            confidence=self.confidence_level, method=interval,
            note="stratified by group",
        )  # fmt: skip

    def to_frame(self, method: Method = "between_groups") -> pd.DataFrame:
        """Everything in one long table: ``scope, metric, group, n, estimate, ci_low, ci_high``.

        ``scope`` is ``overall``, ``group``, ``difference``, ``ratio`` or ``summary``;
        ``group`` holds the group key (a tuple for intersections) for ``group`` rows; ``n`` is
        the number of examples behind an ``overall`` or ``group`` estimate (empty otherwise),
        so a reader can tell a small group's wide interval from a real difference.
        """
        parts = []

        def add(scope: str, est: pd.Series, ci: pd.DataFrame, group: Any = None, n: float = np.nan) -> None:
            parts.append(pd.DataFrame({
                "scope": scope, "metric": est.index, "group": [group] * len(est), "n": n,
                "estimate": est.to_numpy(float), "ci_low": ci["low"].to_numpy(float),
                "ci_high": ci["high"].to_numpy(float),
            }))  # fmt: skip

        sizes = self.group_sizes
        add("overall", self.overall, self.overall_ci, n=float(sizes.sum()))
        for key, row in self.by_group.iterrows():
            ci = self.by_group_ci.loc[key].unstack()
            add("group", row, ci.loc[row.index], group=key, n=float(sizes.get(key, np.nan)))
        add("difference", self.difference(method), self.difference_ci(method))
        add("ratio", self.ratio(method), self.ratio_ci(method))
        summary = self.summary(method)
        add("summary", summary["estimate"], summary)
        return pd.concat(parts, ignore_index=True)


def fairness_report(
    y_true: Any,
    y_pred: Any,
    *,
    sensitive_features: Any,
    y_score: Any = None,
    pos_label: Hashable | None = None,
    n_bins: int = 10,
    sample_weight: Any = None,
    min_group_size: int = 10,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    random_state: int | np.random.Generator | None = None,
) -> GroupReport:
    """Compute every group metric for one sensitive attribute, with stratified bootstrap CIs.

    Args:
        y_true: True labels, ``[n]``, or ``None`` (then only selection rates).
        y_pred: Predicted labels, ``[n]``.
        sensitive_features: Group of each example (one or several columns).
        y_score: Optional probabilities (``[n]`` or ``[n, C]``) for the calibration error.
        pos_label: Positive class (see :mod:`neuronmap.metrics.fairness`).
        n_bins: Calibration bins.
        sample_weight: Optional non-negative weight per example.
        min_group_size: Groups with fewer examples are excluded and listed in
            ``excluded_groups`` (default 10: a bootstrap on fewer points says little).
        n_resamples: Bootstrap resamples (0 disables the intervals: bounds are NaN).
        confidence_level: Nominal coverage in (0, 1).
        random_state: Seed or ``numpy.random.Generator`` for the resampling.

    Returns:
        The :class:`GroupReport`.

    Raises:
        InvalidParameterError: Bad labels, scores, lengths, groups or options.
    """
    if not 0.0 < confidence_level < 1.0:
        raise InvalidParameterError(
            f"confidence_level must be in (0, 1); got {confidence_level!r}."
        )
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 0:
        raise InvalidParameterError(f"n_resamples must be an int >= 0; got {n_resamples!r}.")
    ev = _evaluate(
        y_true, y_pred, sensitive_features, pos_label=pos_label, sample_weight=sample_weight,
        min_group_size=min_group_size, y_score=y_score, n_bins=n_bins,
    )  # fmt: skip
    cols = _columns(ev, has_truth=y_true is not None)
    names = [c for c, _, _ in cols]
    index = ev.groups.index[ev.included]
    by_group, overall = ev.rates()
    group_point, overall_point = _matrix(by_group, cols), _matrix(overall, cols)
    rng = np.random.default_rng(random_state)
    boot = _stratified_bootstrap_sums(
        ev.stats, ev.groups.codes, len(ev.groups.index), n_resamples=n_resamples, rng=rng
    )
    boot_group, boot_overall = ev.rates(boot)
    group_reps, overall_reps = _matrix(boot_group, cols), _matrix(boot_overall, cols)
    g_low, g_high = _interval(group_reps, confidence_level)
    o_low, o_high = _interval(overall_reps, confidence_level)
    ci_cols = pd.MultiIndex.from_product([names, ["low", "high"]], names=["metric", "bound"])
    by_group_ci = pd.DataFrame(
        np.stack([g_low, g_high], axis=-1).reshape(len(index), 2 * len(names)), index=index, columns=ci_cols
    )
    reasons = _reasons(ev.sums[ev.included], ev.classes, ev.n_bins)
    undefined: dict[str, dict[Hashable, str]] = {}
    kept = np.flatnonzero(ev.included)
    for j, (name, metric, position) in enumerate(cols):
        bad = np.flatnonzero(~np.isfinite(group_point[:, j]))
        if len(bad):
            undefined[name] = {ev.groups.key(kept[i]): reasons[metric][i, position] for i in bad}
    return GroupReport(
        overall=pd.Series(overall_point, index=names, name="overall"),
        overall_ci=pd.DataFrame({"low": o_low, "high": o_high}, index=names),
        by_group=pd.DataFrame(group_point, index=index, columns=names),
        by_group_ci=by_group_ci,
        group_sizes=pd.Series(ev.groups.sizes, index=ev.groups.index, name="size"),
        excluded_groups=ev.excluded,
        undefined=undefined,
        multiclass=ev.multiclass,
        classes=tuple(ev.classes),
        confidence_level=confidence_level,
        n_resamples=n_resamples,
        _group_replicates=group_reps,
        _overall_replicates=overall_reps,
    )
