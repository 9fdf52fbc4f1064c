"""The model's own task performance on the probe set, overall and per group, with CIs.

Every other analysis looks *inside* the model (probes on hidden layers, similarity, neuron
statistics). A model card and EU AI Act Annex IV 2(g) and 3 need the system's own performance
("degrees of accuracy for specific persons or groups of persons ... and the overall expected
level of accuracy"), measured on data with its uncertainty. :class:`ModelPerformance` reads
the model's top-level output on the probe set and computes:

* classification: accuracy, macro-averaged F1 (per-class F1 in a table) and the top-label
  expected calibration error (ECE, equal-width confidence bins; Guo et al. 2017, eq. 3;
  Naeini, Cooper & Hauskrecht 2015) when probabilities are available;
* regression: R² (coefficient of determination) and mean absolute error.

Point estimates come from :mod:`sklearn.metrics`; each carries a paired (example-level)
bootstrap CI from :func:`neuronmap.stats.bootstrap_ci` (BCa by default; Efron 1987), computed
with vectorised NumPy twins of the same formulas so that 1000 resamples stay cheap. Per-class
F1 in the resamples is over the classes present in the whole probe set. Groups (each
probe-set group column, or those named) get the same metrics with CIs and their sizes; groups
smaller than ``min_group_size`` are listed with their size and no estimate.

References:
    Guo, Pleiss, Sun & Weinberger (2017). On Calibration of Modern Neural Networks. ICML.
    Naeini, Cooper & Hauskrecht (2015). Obtaining Well Calibrated Probabilities Using Bayesian Binning. AAAI.
    Efron (1987). Better Bootstrap Confidence Intervals. JASA 82(397).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from neuronmap.analyses.base import Analysis, AnalysisContext, AnalysisResult, MetricSet, register_analysis
from neuronmap.analyses.params import Columns, Interval, Options
from neuronmap.errors import InvalidParameterError, ProbeSetError
from neuronmap.stats import bootstrap_ci

__all__ = ["ModelPerformance"]

Task = Literal["auto", "classification", "regression"]
_TASKS = ("auto", "classification", "regression")
#: Metric name -> (Hugging Face Hub metric id, human name); the model card's ``model-index`` uses it.
HUB_METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "Accuracy"),
    "f1_macro": ("f1", "F1 (macro)"),
    "calibration_error": ("ece", "Expected calibration error"),
    "r2": ("r_squared", "R²"),
    "mae": ("mae", "Mean absolute error"),
}
#: The overall metrics that headline a run (and go to the Hub metadata).
HEADLINE = ("accuracy", "f1_macro", "calibration_error", "r2", "mae")


def _accuracy(y: NDArray[Any], p: NDArray[Any], axis: int = -1) -> Any:
    return (y == p).mean(axis=axis)


def _f1_macro_fn(classes: NDArray[Any]) -> Callable[..., Any]:
    def f1(y: NDArray[Any], p: NDArray[Any], axis: int = -1) -> Any:
        scores = []
        for c in classes:
            tp = ((y == c) & (p == c)).sum(axis=axis)
            wrong = ((y == c) != (p == c)).sum(axis=axis)
            denom = 2 * tp + wrong
            scores.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0))
        return np.mean(scores, axis=0)

    return f1


def _ece_fn(n_bins: int) -> Callable[..., Any]:
    def ece(correct: NDArray[Any], conf: NDArray[Any], bins: NDArray[Any], axis: int = -1) -> Any:
        n = correct.shape[axis]
        total = 0.0
        for b in range(n_bins):
            mask = bins == b
            n_b = mask.sum(axis=axis)
            acc = np.where(n_b > 0, (correct * mask).sum(axis=axis) / np.maximum(n_b, 1), 0.0)
            mean_conf = np.where(n_b > 0, (conf * mask).sum(axis=axis) / np.maximum(n_b, 1), 0.0)
            total = total + np.abs(acc - mean_conf) * n_b / n
        return total

    return ece


def _r2(y: NDArray[Any], p: NDArray[Any], axis: int = -1) -> Any:
    resid = ((y - p) ** 2).sum(axis=axis)
    spread = ((y - y.mean(axis=axis, keepdims=True)) ** 2).sum(axis=axis)
    return np.where(spread > 0, 1.0 - resid / np.where(spread > 0, spread, 1.0), 0.0)


def _mae(y: NDArray[Any], p: NDArray[Any], axis: int = -1) -> Any:
    return np.abs(y - p).mean(axis=axis)


def _safe(text: str) -> str:
    """A tracker-safe key component (MLflow allows letters, digits, ``_-. :``)."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text) or "_"


@register_analysis
class ModelPerformance(Analysis):
    """The model's task metrics on the probe set with bootstrap CIs, overall and per group.

    Metric keys: ``neuronmap/performance/overall/<metric>`` and
    ``neuronmap/performance/<column>.<group>/<metric>`` (with ``_ci_low``/``_ci_high``), plus
    ``.../n`` (the number of examples). Tables: ``overall``, ``by_group`` (every group with its
    size), ``per_class`` (classification).

    Args:
        task: ``"classification"``, ``"regression"`` or ``"auto"`` (classification when the
            labels are integers and the output has one logit or one column per class).
        label_column: Probe-set column of true labels or targets.
        groups: Probe-set columns to disaggregate by (default: every group column).
        predictions: ``None`` (argmax/softmax of logits; a single logit is a binary classifier,
            or the prediction itself in regression) or a callable mapping the output to
            predictions (then no calibration error, since no probabilities are known).
        n_bins: Equal-width confidence bins of the calibration error.
        n_resamples: Bootstrap resamples per CI.
        confidence: CI coverage.
        min_group_size: Groups with fewer examples get no estimate (their size is listed).
        name: Registry name override (e.g. two instances with different label columns).

    Raises:
        InvalidParameterError: An unknown task, bad numbers, or a non-callable ``predictions``.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"],
        ...                        analyses=[ModelPerformance(n_resamples=200)], reporters=[])
        >>> m = monitor.run(tiny_mlp(), step=0).metrics
        >>> m["neuronmap/performance/overall/n"], 0 <= m["neuronmap/performance/overall/accuracy"] <= 1
        (64.0, True)
    """

    name = "performance"
    needs_outputs = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "task": [Options(_TASKS)],
        "label_column": [str],
        "groups": [None, Columns()],
        "predictions": [None, callable],
        "n_bins": [Interval(int, 1, None)],
        "min_group_size": [Interval(int, 2, None)],
    }

    def __init__(
        self,
        *,
        task: Task = "auto",
        label_column: str = "label",
        groups: str | Sequence[str] | None = None,
        predictions: Callable[[np.ndarray], Any] | None = None,
        n_bins: int = 10,
        n_resamples: int = 1000,
        confidence: float = 0.95,
        min_group_size: int = 10,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.task = task
        self.label_column = label_column
        self.groups = [groups] if isinstance(groups, str) else (None if groups is None else list(groups))
        self._predictions = predictions
        self.n_bins = n_bins
        self.n_resamples = n_resamples
        self.confidence = confidence
        self.min_group_size = min_group_size

    def config(self) -> dict[str, Any]:
        return {**super().config(), "predictions": None if self._predictions is None else repr(self._predictions)}

    # ------------------------------------------------------------------ run
    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        if self.label_column not in ctx.probe.frame:
            raise ProbeSetError(
                f"ModelPerformance needs true labels, but probe set {ctx.probe.name!r} has no "
                f"{self.label_column!r} column (it has {list(ctx.probe.frame.columns)}). Pass labels= to the "
                "ProbeSet or label_column=."
            )
        y_true = np.asarray(ctx.probe.column(self.label_column))
        task, y_pred, proba = self._predict(ctx.outputs, y_true)
        columns = self.groups if self.groups is not None else list(ctx.probe.group_columns)
        unknown = [c for c in columns if c not in ctx.probe.frame]
        if unknown:
            raise ProbeSetError(f"ModelPerformance groups {unknown} are not columns of probe set "
                                f"{ctx.probe.name!r}; group columns: {ctx.probe.group_columns}.")
        rng = np.random.default_rng([ctx.random_state, 11])
        metrics, notes = MetricSet(), []
        rows = self._evaluate("overall", "", "overall", y_true, y_pred, proba, task, metrics, rng)
        overall = pd.DataFrame(rows)
        group_rows: list[dict[str, Any]] = []
        for column in columns:
            values = pd.Series(ctx.probe.column(column)).astype(str).to_numpy()
            for group in sorted(set(values)):
                mask = values == group
                key = f"{_safe(column)}.{_safe(group)}"
                if mask.sum() < self.min_group_size:
                    notes.append(f"{column}={group}: {int(mask.sum())} examples, fewer than min_group_size="
                                 f"{self.min_group_size}; no estimate.")
                    group_rows.append({"attribute": column, "group": group, "n": int(mask.sum()), "metric": "",
                                       "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "ci_method": ""})
                    continue
                metrics.add(key, "n", float(mask.sum()))
                group_rows += self._evaluate(column, group, key, y_true[mask], y_pred[mask],
                                             None if proba is None else proba[mask], task, metrics, rng)
        by_group = pd.DataFrame(group_rows, columns=["attribute", "group", "n", "metric", "estimate", "ci_low",
                                                     "ci_high", "ci_method"])
        tables = {"overall": overall, "by_group": by_group}
        if task == "classification":
            tables["per_class"] = _per_class(y_true, y_pred)
        notes.append(f"{task}: {self.confidence:.0%} paired bootstrap CIs ({self.n_resamples} resamples of "
                     f"examples; BCa, percentile where BCa is undefined) on {len(y_true)} probe examples.")
        figures = {"by_group": _figure(overall, by_group, task)} if not by_group.empty else {}
        return AnalysisResult(self.name, metrics=metrics, tables=tables, figures=figures, notes=tuple(notes))

    def _predict(
        self, outputs: np.ndarray | None, y_true: NDArray[Any]
    ) -> tuple[str, NDArray[Any], NDArray[Any] | None]:
        if outputs is None:
            raise InvalidParameterError(
                "ModelPerformance needs the model's top-level output, but none was captured: the model returned "
                "no tensor (nor a 'logits' entry). Pass predictions= to map the output."
            )
        out = np.asarray(outputs, dtype=np.float64)
        integral = y_true.dtype.kind in "iub" or (y_true.dtype.kind == "f" and np.all(y_true == np.round(y_true)))
        single = out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1)
        task = self.task
        if task == "auto":
            binary = integral and set(np.unique(y_true).tolist()) <= {0, 1}
            task = "classification" if (integral and not single) or (single and binary) else "regression"
        if self._predictions is not None:
            pred = np.asarray(self._predictions(out)).reshape(len(out), -1)[:, 0]
            return task, pred, None
        if task == "regression":
            if not single:
                raise InvalidParameterError(f"ModelPerformance(task='regression') expects one output per example; "
                                            f"got shape {out.shape}. Pass predictions=.")
            return task, out.reshape(-1), None
        if not integral:
            raise ProbeSetError(f"Classification needs integer class labels in {self.label_column!r}; got values like "
                                f"{y_true[:3].tolist()}. Encode the labels, or pass task='regression'.")
        if single:
            p1 = 1.0 / (1.0 + np.exp(-out.reshape(-1)))
            return task, (p1 > 0.5).astype(np.int64), np.stack([1 - p1, p1], axis=1)
        if out.ndim != 2:
            raise InvalidParameterError(f"ModelPerformance expects logits of shape [n, classes]; got {out.shape}. "
                                        "Pass predictions=.")
        shifted = np.exp(out - out.max(axis=1, keepdims=True))
        return task, out.argmax(axis=1).astype(np.int64), shifted / shifted.sum(axis=1, keepdims=True)

    def _evaluate(self, attribute: str, group: str, key: str, y: NDArray[Any], p: NDArray[Any],
                  proba: NDArray[Any] | None, task: str, metrics: MetricSet,
                  rng: np.random.Generator) -> list[dict[str, Any]]:
        from sklearn import metrics as skm

        y = y.astype(np.float64)
        p = p.astype(np.float64)
        stats: list[tuple[str, float, Callable[..., Any], tuple[NDArray[Any], ...]]] = []
        if task == "classification":
            classes = np.unique(np.concatenate([y, p]))
            stats.append(("accuracy", float(skm.accuracy_score(y, p)), _accuracy, (y, p)))
            stats.append(("f1_macro", float(skm.f1_score(y, p, average="macro", zero_division=0)),
                          _f1_macro_fn(classes), (y, p)))
            if proba is not None:
                conf = proba.max(axis=1)
                correct = (y == p).astype(np.float64)
                bins = np.minimum((conf * self.n_bins).astype(np.int64), self.n_bins - 1).astype(np.float64)
                ece = _ece_fn(self.n_bins)
                stats.append(("calibration_error", float(ece(correct, conf, bins)), ece, (correct, conf, bins)))
        else:
            stats.append(("r2", float(skm.r2_score(y, p)), _r2, (y, p)))
            stats.append(("mae", float(skm.mean_absolute_error(y, p)), _mae, (y, p)))
        if key == "overall":
            metrics.add(key, "n", float(len(y)))
        rows = []
        for metric, estimate, fn, samples in stats:
            ci = bootstrap_ci(fn, *samples, paired=True, n_resamples=self.n_resamples, confidence=self.confidence,
                              random_state=rng)
            metrics.add(key, metric, estimate, ci=ci)
            rows.append({"attribute": attribute, "group": group, "n": len(y), "metric": metric,
                         "estimate": estimate, "ci_low": ci.low, "ci_high": ci.high, "ci_method": ci.method})
        return rows


def _per_class(y: NDArray[Any], p: NDArray[Any]) -> pd.DataFrame:
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.unique(np.concatenate([y, p]))
    prec, rec, f1, support = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    return pd.DataFrame({"class": labels, "support": support, "precision": prec, "recall": rec, "f1": f1})


def _figure(overall: pd.DataFrame, by_group: pd.DataFrame, task: str) -> Figure:
    """The first metric per group with its CI, beside the overall value (a dashed line)."""
    metric = "accuracy" if task == "classification" else "r2"
    shown = by_group[by_group["metric"] == metric]
    fig = Figure(figsize=(8.0, 1.2 + 0.35 * max(3, len(shown))))
    ax = fig.subplots()
    labels = [f"{a}={g} (n={n})" for a, g, n in zip(shown["attribute"], shown["group"], shown["n"], strict=True)]
    y = np.arange(len(shown))
    est = shown["estimate"].to_numpy(float)
    err = np.vstack([est - shown["ci_low"].to_numpy(float), shown["ci_high"].to_numpy(float) - est])
    ax.errorbar(est, y, xerr=np.clip(np.nan_to_num(err), 0, None), fmt="o", capsize=3)
    ax.set_yticks(y, labels, fontsize=9)
    row = overall[overall["metric"] == metric]
    if len(row):
        ax.axvline(float(row["estimate"].iloc[0]), linestyle="--", color="0.5", label="overall")
        ax.legend(fontsize=9)
    ax.set_xlabel(f"{metric} (95% bootstrap CI)")
    ax.set_title(f"Model {metric} per group", fontsize=11)
    fig.tight_layout()
    return fig
