"""Group fairness of the model's own predictions on the probe set, with CIs and tests.

:class:`Fairness` turns the model's top-level output on the probe set into labels (argmax)
and scores (softmax probability of the positive label), and for every sensitive attribute
computes the named metrics of :func:`neuronmap.metrics.fairness.fairness_report`
(demographic parity, equalized odds, equal opportunity, error-rate and predictive-parity
differences and ratios, accuracy and calibration differences), each with a stratified
bootstrap confidence interval. A CI of a max - min difference does not test "no
difference" (it is biased away from zero), so each metric also gets a test of the null
hypothesis that the rate it compares is equal in every group:

* ``test="chi2"``: Pearson's chi-square test of independence on the groups x outcome
  contingency table of the rate (Pearson 1900; :func:`scipy.stats.chi2_contingency`, no
  continuity correction). Equalized odds combines its two tables (``Y = 1`` and ``Y = 0``
  are disjoint, so the statistics are independent and their sum is chi-square with the
  summed degrees of freedom).
* ``test="permutation"``: the group column is permuted *within the subset the rate is
  computed on* (within each ``Y`` stratum for equalized odds, among predicted positives for
  precision) and the max - min rate gap recomputed; p-values follow Phipson & Smyth (2010),
  with ties between the observed and permuted gaps broken at random (seeded), since the
  gaps of small subsets take few distinct values and would otherwise make the test
  conservative.
  Permuting over all examples would also move positives between groups whose base rates
  differ, and rejected a true null in 18-31 % of simulations at alpha = 0.05.

Metrics that compare the same rate share one test (``false_negative_rate_difference`` and
``equal_opportunity_difference`` both compare true positive rates; a difference and its
ratio test the same null), and the family corrected for multiple comparisons is every
distinct (attribute, rate) test. The calibration difference has no test.

References:
    Hardt, Price & Srebro (2016). Equality of Opportunity in Supervised Learning. NeurIPS.
    Pearson (1900). On the criterion that a given system of deviations ... Phil. Mag. 50.
    Phipson & Smyth (2010). Permutation p-values should never be zero. SAGMB 9(1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Columns, Interval, Options, Subset
from neuronmap.errors import InvalidParameterError, ProbeSetError
from neuronmap.findings import Finding
from neuronmap.metrics.fairness import GroupReport, fairness_report
from neuronmap.stats import adjust_pvalues, permutation_count, resolution_note

if TYPE_CHECKING:
    from neuronmap.probe import ProbeSet

__all__ = ["Fairness"]

Test = Literal["chi2", "permutation"]
_TESTS = ("chi2", "permutation")
Predictions = Callable[[np.ndarray], Any]

#: The rate each named metric compares, i.e. the null hypothesis its p-value tests.
_HYPOTHESIS: dict[str, str] = {
    "demographic_parity_difference": "selection_rate",
    "demographic_parity_ratio": "selection_rate",
    "equalized_odds_difference": "equalized_odds",
    "equalized_odds_ratio": "equalized_odds",
    "equal_opportunity_difference": "true_positive_rate",
    "equal_opportunity_ratio": "true_positive_rate",
    "false_positive_rate_difference": "false_positive_rate",
    "false_negative_rate_difference": "true_positive_rate",
    "predictive_parity_difference": "precision",
    "predictive_parity_ratio": "precision",
    "accuracy_difference": "accuracy",
}
_LABEL_FREE = ("demographic_parity_difference", "demographic_parity_ratio")
_BAR_METRICS = ("selection_rate", "true_positive_rate", "false_positive_rate")


def predict_from_outputs(
    outputs: np.ndarray | None, *, positive_label: int, predictions: Predictions | None, owner: str
) -> tuple[NDArray[Any], NDArray[np.float64] | None]:
    """Labels and positive-class scores from the model output (shared with the counterfactual analysis).

    ``[n, C]`` logits give ``argmax`` labels and ``softmax[:, positive_label]`` scores; a single
    logit (``[n]`` or ``[n, 1]``) gives ``logit > 0`` and ``sigmoid(logit)``. A ``predictions``
    callable receives the raw output and returns labels, or ``(labels, scores)``.

    Raises:
        InvalidParameterError: No output, an output of another shape, a ``positive_label``
            outside the classes, or continuous values where labels are required.
    """
    if outputs is None:
        raise InvalidParameterError(
            f"{owner} needs the model's top-level output, but none was captured: the model "
            "returned no tensor (nor a 'logits' entry). Pass predictions= to map the output."
        )
    out = np.asarray(outputs, dtype=np.float64)
    if predictions is not None:
        got = predictions(out)
        labels, scores = got if isinstance(got, tuple) and len(got) == 2 else (got, None)
        labels = np.asarray(labels)
        if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
            raise InvalidParameterError(
                f"{owner}: predictions= returned continuous values (e.g. {labels.flat[0]!r}) where "
                "class labels are required; return labels, or a (labels, scores) pair."
            )
        return labels.reshape(len(out), -1)[:, 0], None if scores is None else np.asarray(scores, float)
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        if positive_label not in (0, 1):
            raise InvalidParameterError(
                f"{owner}: a single-logit output has labels 0 and 1; got positive_label={positive_label!r}."
            )
        logit = out.reshape(-1)
        p1 = 1.0 / (1.0 + np.exp(-logit))
        return (logit > 0).astype(np.int64), p1 if positive_label == 1 else 1.0 - p1
    if out.ndim != 2:
        raise InvalidParameterError(
            f"{owner} expects logits of shape [n, classes]; got {out.shape}. Pass predictions=."
        )
    if not isinstance(positive_label, (int, np.integer)) or not 0 <= positive_label < out.shape[1]:
        raise InvalidParameterError(
            f"{owner}: positive_label must be a class index in [0, {out.shape[1]}) for "
            f"{out.shape[1]} logits; got {positive_label!r}."
        )
    shifted = np.exp(out - out.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    return out.argmax(axis=1).astype(np.int64), probs[:, int(positive_label)]


@register_analysis
class Fairness(Analysis):
    """Fairness metrics of the model's predictions per sensitive attribute, with CIs and tests.

    Args:
        sensitive: Probe-set column(s) holding sensitive attributes. A tuple of columns is
            one intersectional attribute named ``"a+b"``.
        positive_label: The favourable class (a logit index for the default predictions).
        predictions: ``None`` (argmax of the logits, softmax scores) or a callable mapping
            the output ``[n, ...]`` to labels, or to ``(labels, scores)``.
        label_column: Column of true labels. Without it only demographic parity is
            computed; asking for a metric that needs labels then raises.
        metrics: Named metrics to report (default: every one available).
        min_group_size: Smaller groups are excluded and named in the notes.
        n_resamples: Stratified bootstrap resamples per interval.
        confidence: Coverage of the intervals.
        test: ``"chi2"`` or ``"permutation"`` (see the module docs).
        n_permutations: Permutations for ``test="permutation"``.
        p_adjust: Correction across attributes x tests (any of ``PVALUE_METHODS``).
        alpha: Significance level for the ``significant`` column.

    Metrics: ``neuronmap/fairness/<attribute>/<metric>`` with ``_ci_low``, ``_ci_high``,
    ``_p`` and ``_p_adj``. Tables: ``summary`` and ``by_group``. Figure: ``by_group``.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(n=80), layers=["net.0"],
        ...                        analyses=[Fairness("group", n_resamples=200)], reporters=[])
        >>> m = monitor.run(tiny_mlp(), step=0).metrics
        >>> 0 <= m["neuronmap/fairness/group/demographic_parity_difference"] <= 1
        True
    """

    name = "fairness"
    probe_columns = ("sensitive",)
    headline_metrics = ("demographic_parity_difference", "equalized_odds_difference", "equal_opportunity_difference",
                        "accuracy_difference")

    def findings(self, result: AnalysisResult) -> list[Finding]:
        """See :func:`neuronmap.analyses._findings.fairness_findings`."""
        from neuronmap.analyses._findings import fairness_findings

        return fairness_findings(result, alpha=float(getattr(self, "alpha", 0.05)))
    needs_outputs = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "sensitive": [Columns(groups=True)],
        "positive_label": [Interval(int, 0, None), str],
        "predictions": [None, callable],
        "label_column": [str],
        "metrics": [None, Subset([*_HYPOTHESIS, "calibration_error_difference"])],
        "min_group_size": [Interval(int, 1, None)],
        "test": [Options(_TESTS)],
        "n_permutations": [Interval(int, 1, None)],
    }

    def __init__(
        self,
        sensitive: str | Sequence[str | tuple[str, ...]],
        *,
        positive_label: int = 1,
        predictions: Predictions | None = None,
        label_column: str = "label",
        metrics: Sequence[str] | None = None,
        min_group_size: int = 10,
        n_resamples: int = 1000,
        confidence: float = 0.95,
        test: Test = "chi2",
        n_permutations: int = 999,
        p_adjust: str = "holm",
        alpha: float = 0.05,
    ) -> None:
        super().__init__()
        items = [sensitive] if isinstance(sensitive, str) else list(sensitive)
        self.sensitive = [list(s) if isinstance(s, tuple) else s for s in items]
        self.positive_label = positive_label
        self._predictions = predictions
        self.label_column = label_column
        self.metrics = None if metrics is None else list(metrics)
        self.min_group_size = min_group_size
        self.n_resamples = n_resamples
        self.confidence = confidence
        self.test = test
        self.n_permutations = n_permutations
        self.p_adjust = p_adjust
        self.alpha = alpha

    def check_probe(self, probe: ProbeSet) -> list[str]:
        """Missing columns, and attributes with fewer than 2 groups of ``min_group_size`` examples."""
        problems = super().check_probe(probe)
        if problems:
            return problems
        for spec in self.sensitive:
            columns = [spec] if isinstance(spec, str) else list(spec)
            sizes = probe.frame[columns].astype(str).agg("/".join, axis=1).value_counts(sort=False)
            if int((sizes >= self.min_group_size).sum()) < 2:
                problems.append(
                    f"Fairness(sensitive={spec!r}) needs at least 2 groups of min_group_size={self.min_group_size} "
                    f"examples; probe set {probe.name!r} has group sizes {sizes.to_dict()}. Add examples or lower "
                    "min_group_size."
                )
        return problems

    def config(self) -> dict[str, Any]:
        return {**super().config(), "predictions": None if self._predictions is None else repr(self._predictions)}

    # ------------------------------------------------------------------ run
    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        columns = {_attribute_name(s): [s] if isinstance(s, str) else list(s) for s in self.sensitive}
        groups = {name: pd.DataFrame({c: ctx.probe.column(c) for c in cols}) for name, cols in columns.items()}
        y_true = self._labels(ctx)
        y_pred, scores = predict_from_outputs(
            ctx.outputs, positive_label=self.positive_label, predictions=self._predictions, owner="Fairness"
        )
        notes: list[str] = []
        reports: dict[str, GroupReport] = {}
        pvalues: dict[tuple[str, str], float] = {}
        for offset, (attr, frame) in enumerate(groups.items()):
            report = fairness_report(
                y_true, y_pred, sensitive_features=frame if frame.shape[1] > 1 else frame.iloc[:, 0],
                y_score=scores if y_true is not None else None, pos_label=self.positive_label,
                min_group_size=self.min_group_size, n_resamples=self.n_resamples,
                confidence_level=self.confidence, random_state=np.random.default_rng([ctx.random_state, offset]),
            )  # fmt: skip
            notes += _report_notes(attr, report, self.min_group_size)
            if len(report.by_group) < 2:
                notes.append(f"{attr}: fewer than 2 groups of at least {self.min_group_size} examples; skipped.")
                continue
            reports[attr] = report
            keep = _included_mask(frame, report)
            codes = pd.factorize(frame[keep].astype(str).agg("\x1f".join, axis=1))[0].astype(np.intp)
            pos_pred = np.asarray(y_pred == self.positive_label)[keep]
            pos_true = None if y_true is None else np.asarray(y_true == self.positive_label)[keep]
            rng = np.random.default_rng([ctx.random_state, offset, 7])
            for hyp in sorted({_HYPOTHESIS[m] for m in self._chosen(y_true is not None) if m in _HYPOTHESIS}):
                pvalues[(attr, hyp)] = self._test(hyp, codes, pos_pred, pos_true, rng)
        adjusted = dict(zip(pvalues, adjust_pvalues(np.array(list(pvalues.values()), float),
                                                    method=self.p_adjust, alpha=self.alpha), strict=True))
        summary = self._summary(reports, pvalues, adjusted, has_truth=y_true is not None)
        if reports and self.test == "chi2":
            notes.append("p-values: Pearson chi-square tests of equal rates across groups.")
        elif reports:
            n_tests = int(np.isfinite(np.array(list(pvalues.values()), float)).sum())
            if resolution_note(self.n_permutations, n_tests, alpha=self.alpha):
                notes.append(
                    f"p-value resolution: with n_permutations={self.n_permutations} the permutation p-values "
                    f"move in steps of 1/{self.n_permutations + 1} = {1 / (self.n_permutations + 1):.3g} (below "
                    f"that only the random tie-break orders them), so after correcting over {n_tests} tests a "
                    f"corrected p-value below alpha={self.alpha} cannot be told from chance; with n_permutations="
                    f"{permutation_count(n_tests, alpha=self.alpha)} it can reach alpha / 10."
                )
        figures = {"by_group": _figure(reports, self.confidence)} if reports else {}
        by_group = pd.concat(
            [r.to_frame().assign(attribute=a) for a, r in reports.items()], ignore_index=True
        ) if reports else pd.DataFrame()
        if not by_group.empty:
            by_group["group"] = by_group["group"].map(lambda g: "" if g is None else str(g))
        return AnalysisResult(
            self.name, metrics=_metrics(summary), tables={"summary": summary, "by_group": by_group},
            figures=figures, notes=tuple(notes), status="ok" if reports else "skipped",
        )  # fmt: skip

    def _labels(self, ctx: AnalysisContext) -> NDArray[Any] | None:
        if self.label_column in ctx.probe.frame:
            labels = ctx.probe.column(self.label_column)
            if self._predictions is None and labels.dtype.kind not in "iub" and not (
                labels.dtype.kind == "f" and np.all(labels == np.round(labels))
            ):
                raise ProbeSetError(
                    f"Column {self.label_column!r} must hold class indices of the logits to compare with "
                    f"argmax predictions; got values like {labels[:3].tolist()}. Encode the labels, or pass "
                    "predictions= returning labels of the same kind."
                )
            return labels
        needing = [m for m in (self.metrics or ()) if m not in _LABEL_FREE]
        if needing:
            raise ProbeSetError(
                f"Fairness metrics {needing} need true labels, but probe set {ctx.probe.name!r} has no "
                f"{self.label_column!r} column (it has {list(ctx.probe.frame.columns)}). Add labels or "
                f"ask only for {list(_LABEL_FREE)}."
            )
        return None

    def _chosen(self, has_truth: bool) -> list[str]:
        available = [*_HYPOTHESIS, "calibration_error_difference"] if has_truth else list(_LABEL_FREE)
        wanted = available if self.metrics is None else self.metrics
        return [m for m in wanted if m in available]

    # ------------------------------------------------------------------ tests
    def _test(
        self, hyp: str, codes: NDArray[np.intp], pos_pred: NDArray[np.bool_],
        pos_true: NDArray[np.bool_] | None, rng: np.random.Generator,
    ) -> float:  # fmt: skip
        """p-value of "the compared rate is equal in every group"."""
        parts = _rate_parts(hyp, pos_pred, pos_true)
        if self.test == "chi2":
            return _chi2_p([_contingency(codes, subset, outcome) for subset, outcome in parts])
        perms = _permute_within(codes, parts, self.n_permutations, rng)
        observed = _max_gap(codes[None], parts)[0]
        null = _max_gap(perms, parts)
        if not np.isfinite(observed):
            return float("nan")
        # Rates of small subsets take few values, so the gap ties often with its permuted copies
        # and ``(1 + #{>=}) / (1 + N)`` rejects well below alpha (2.5 % at 5 % with 24 positives
        # in a group). Ties are broken at random (the observed value ranks uniformly among its
        # ties), which makes the seeded p-value uniform under the null.
        above = np.count_nonzero(null > observed + 1e-12)
        tied = np.count_nonzero(np.abs(null - observed) <= 1e-12)
        return float((above + rng.uniform() * (tied + 1)) / (1 + self.n_permutations))

    def _summary(
        self, reports: dict[str, GroupReport], pvalues: dict[tuple[str, str], float],
        adjusted: dict[tuple[str, str], float], *, has_truth: bool,
    ) -> pd.DataFrame:  # fmt: skip
        rows = []
        # the step of the permutation p-values (the random tie-break spreads p below it uniformly)
        resolution = 1.0 / (self.n_permutations + 1) if self.test == "permutation" else 0.0
        for attr, report in reports.items():
            table = report.summary()
            for metric in self._chosen(has_truth):
                if metric not in table.index:
                    continue
                hyp = _HYPOTHESIS.get(metric, "")
                p, p_adj = pvalues.get((attr, hyp), np.nan), adjusted.get((attr, hyp), np.nan)
                est, low, high = table.loc[metric, ["estimate", "low", "high"]]
                rows.append({"attribute": attr, "metric": metric, "estimate": est, "ci_low": low,
                             "ci_high": high, "test": hyp or "none", "p": p, "p_adj": p_adj,
                             "p_resolution": resolution if np.isfinite(p) else np.nan,
                             "significant": bool(p_adj < self.alpha)})  # fmt: skip
        columns = ["attribute", "metric", "estimate", "ci_low", "ci_high", "test", "p", "p_adj", "p_resolution",
                   "significant"]
        return pd.DataFrame(rows, columns=columns)


def _attribute_name(spec: str | Sequence[str]) -> str:
    name = spec if isinstance(spec, str) else "+".join(spec)
    if "/" in name:
        raise InvalidParameterError(f"Sensitive column names cannot contain '/'; got {name!r}.")
    return name


def _report_notes(attr: str, report: GroupReport, min_size: int) -> list[str]:
    notes = []
    if report.excluded_groups:
        named = {str(k): v for k, v in report.excluded_groups.items()}
        notes.append(f"{attr}: excluded groups with fewer than {min_size} examples (group: size): {named}.")
    for metric, reasons in report.undefined.items():
        notes.append(f"{attr}: {metric} is NaN for " + "; ".join(f"{k}: {r}" for k, r in reasons.items()))
    return notes


def _included_mask(frame: pd.DataFrame, report: GroupReport) -> NDArray[np.bool_]:
    """Examples whose group is in the report (not excluded for its size)."""
    excluded = {k if isinstance(k, tuple) else (k,) for k in report.excluded_groups}
    keys = list(frame.itertuples(index=False, name=None))
    return np.array([k not in excluded for k in keys], dtype=bool)


def _rate_parts(
    hyp: str, pos_pred: NDArray[np.bool_], pos_true: NDArray[np.bool_] | None
) -> list[tuple[NDArray[np.bool_], NDArray[np.bool_]]]:
    """``(subset, outcome)`` per rate: the rate is ``mean(outcome[subset])`` in each group."""
    everyone = np.ones_like(pos_pred)
    if hyp == "selection_rate" or pos_true is None:
        return [(everyone, pos_pred)]
    table = {
        "true_positive_rate": [(pos_true, pos_pred)],
        "false_positive_rate": [(~pos_true, pos_pred)],
        "equalized_odds": [(pos_true, pos_pred), (~pos_true, pos_pred)],
        "precision": [(pos_pred, pos_true)],
        "accuracy": [(everyone, pos_pred == pos_true)],
    }
    return table[hyp]


def _permute_within(
    codes: NDArray[np.intp], parts: list[tuple[NDArray[np.bool_], NDArray[np.bool_]]], count: int,
    rng: np.random.Generator,
) -> NDArray[np.intp]:  # fmt: skip
    """``count`` relabellings of ``codes`` that permute groups only inside each rate's subset.

    The subsets of one hypothesis are nested or disjoint (``Y = 1`` and ``Y = 0``), so permuting
    inside every subset, and inside the examples outside all of them, is one permutation that
    keeps each group's number of examples in every subset: the null is conditional on them.
    """
    perms = np.tile(codes, (count, 1))
    strata = np.zeros(len(codes), dtype=np.intp)
    for k, (subset, _) in enumerate(parts, start=1):
        strata[subset] = k
    for k in np.unique(strata):
        idx = np.flatnonzero(strata == k)
        perms[:, idx] = rng.permuted(perms[:, idx], axis=1)
    return perms


def _contingency(codes: NDArray[np.intp], subset: NDArray[np.bool_], outcome: NDArray[np.bool_]) -> NDArray[np.int64]:
    g = int(codes.max()) + 1
    hits = np.bincount(codes[subset & outcome], minlength=g)
    misses = np.bincount(codes[subset & ~outcome], minlength=g)
    return np.stack([hits, misses], axis=1)


def _chi2_p(tables: list[NDArray[np.int64]]) -> float:
    """Pearson chi-square over one or several independent tables (statistics and dfs add)."""
    from scipy.stats import chi2, chi2_contingency

    stat, dof = 0.0, 0
    for table in tables:
        table = table[table.sum(axis=1) > 0]  # a group with no example in the subset has no rate
        if len(table) < 2:
            continue
        dof += len(table) - 1
        if (table.sum(axis=0) > 0).all():  # an all-hit or all-miss table has equal rates: chi2 = 0
            stat += float(chi2_contingency(table, correction=False).statistic)
    return float(chi2.sf(stat, dof)) if dof else float("nan")


def _max_gap(codes: NDArray[np.intp], parts: list[tuple[NDArray[np.bool_], NDArray[np.bool_]]]) -> NDArray[np.float64]:
    """Max - min group rate for each row of ``codes`` ``[P, n]`` (worst over ``parts``)."""
    n_perm, g = codes.shape[0], int(codes.max()) + 1
    offsets = (np.arange(n_perm) * g)[:, None]
    gaps = np.full(n_perm, -np.inf)
    for subset, outcome in parts:
        idx = (codes + offsets)[:, subset].ravel()
        total = np.bincount(idx, minlength=n_perm * g).reshape(n_perm, g)
        hits = np.bincount(idx, weights=np.tile(outcome[subset], n_perm), minlength=n_perm * g).reshape(n_perm, g)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(total > 0, hits / np.maximum(total, 1), np.nan)
        defined = np.isfinite(rate).sum(axis=1) >= 2
        gap = np.where(defined, np.nanmax(np.where(defined[:, None], rate, 0), axis=1)
                       - np.nanmin(np.where(defined[:, None], rate, 0), axis=1), np.nan)  # fmt: skip
        gaps = np.fmax(gaps, gap)
    return np.where(np.isfinite(gaps), gaps, np.nan)


def _metrics(summary: pd.DataFrame) -> MetricSet:
    metrics = MetricSet()
    for row in summary.to_dict(orient="records"):
        tested = np.isfinite(row["p"])
        metrics.add(row["attribute"], row["metric"], row["estimate"], ci=(row["ci_low"], row["ci_high"]),
                    p=row["p"] if tested else None, p_adj=row["p_adj"] if tested else None)
    return metrics


def _figure(reports: dict[str, GroupReport], confidence: float) -> Figure:
    """Per-group rates with their bootstrap CIs as error bars, one panel per attribute."""
    fig = Figure(figsize=(7.0, 2.8 * len(reports)))
    axes = fig.subplots(len(reports), 1, squeeze=False)[:, 0]
    for ax, (attr, report) in zip(axes, reports.items(), strict=True):
        shown = [m for m in _BAR_METRICS if m in report.by_group.columns]
        groups = [str(k) for k in report.by_group.index]
        width = 0.8 / len(shown)
        x = np.arange(len(groups))
        for j, metric in enumerate(shown):
            values = report.by_group[metric].to_numpy(float)
            low = report.by_group_ci[(metric, "low")].to_numpy(float)
            high = report.by_group_ci[(metric, "high")].to_numpy(float)
            err = np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)])
            ax.bar(x + (j - (len(shown) - 1) / 2) * width, values, width, yerr=np.nan_to_num(err),
                   capsize=3, label=metric.replace("_", " "))  # fmt: skip
        ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("rate")
        ax.set_title(f"{attr}: per-group rates ({confidence:.0%} stratified bootstrap CI)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

