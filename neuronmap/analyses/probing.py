"""Probing: how well a linear read-out of each layer predicts a probe-set column.

For every monitored layer a classifier (the *probe*) is trained on the layer's activations to
predict a column of the probe set (the labels, or any group/metadata column) and scored by
stratified k-fold cross-validation (Alain & Bengio 2017). Every number carries its uncertainty:

* **accuracy** of the out-of-fold predictions with a Wilson (1927) interval widened by the
  *design effect* of cross-validation, and **macro-F1** with a BCa bootstrap interval widened
  by the same factor. Out-of-fold predictions are not independent trials: the examples of one
  test fold share one fitted probe, and 5-fold accuracy varies 1.3-1.9x more than a binomial
  count (Bengio & Grandvalet 2004). The factor is measured on the layer itself: the variance
  of the cross-validated ridge accuracy over within-fold label permutations, divided by the
  binomial variance (Kish 1965). Plain bootstrap or Wilson intervals covered chance accuracy
  on pure-noise layers in only 84-89 % of cases at a nominal 95 %;
* a **permutation p-value** of the null hypothesis "the layer carries no information about the
  target" (Ojala & Garriga 2010, test 1), corrected across layers (Holm 1979 by default);
  ``n_permutations="auto"`` draws as many permutations as the correction needs and stops each
  layer early once its p-value is clearly large (Besag & Clifford 1991);
* **selectivity** against a control task (Hewitt & Liang 2019): the accuracy of the same probe
  on labels that only a memorising probe can predict, and the difference, with the corrected
  resampled t interval and test of Nadeau & Bengio (2003) on the per-fold differences (a
  McNemar test over examples rejected a true null in 9-13 % of noise layers at alpha = 0.05).

The permutation test uses the cross-validated accuracy of a closed-form ridge probe
(:class:`sklearn.linear_model.RidgeClassifier`) on the same folds as its statistic, ties
between equal accuracies broken by the probe's mean held-out margin (tied integer counts make a
permutation test conservative). Any
statistic gives a valid test of the null hypothesis; this one lets every permutation reuse the
fold's ridge "hat" matrix, so 1000 permutations cost one matrix product per fold instead of
5000 refits. Labels are permuted *within* test folds, a subgroup of all permutations that
keeps every fold's class composition (exchangeability blocks, Winkler et al. 2014), so the
stratified folds stay valid and the null is exact.

References:
    Alain & Bengio (2017). Understanding intermediate layers using linear classifier probes.
    ICLR workshop.
    Hewitt & Liang (2019). Designing and Interpreting Probes with Control Tasks. EMNLP, Sec. 2.
    Ojala & Garriga (2010). Permutation Tests for Studying Classifier Performance. JMLR 11.
    Winkler, Ridgway, Webster, Smith & Nichols (2014). Permutation inference for the general
    linear model. NeuroImage 92.
    Phipson & Smyth (2010). Permutation p-values should never be zero. SAGMB 9(1).
    Bengio & Grandvalet (2004). No Unbiased Estimator of the Variance of K-Fold
    Cross-Validation. JMLR 5.
    Nadeau & Bengio (2003). Inference for the Generalization Error. Machine Learning 52(3).
    Besag & Clifford (1991). Sequential Monte Carlo p-values. Biometrika 78(2).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

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
from neuronmap.analyses.params import Constraint, Interval
from neuronmap.findings import Finding
from neuronmap.metrics.probing import (
    FoldData,
    macro_f1,
    prepare_folds,
    ridge_cv_statistic,
    stratified_folds,
    within_fold_permutations,
)
from neuronmap.stats import (
    adjust_pvalues,
    bootstrap_ci,
    corrected_resampled_ttest,
    permutation_count,
    sequential_permutation_pvalue,
    wilson_interval,
)

__all__ = ["Probing"]

# Relabellings behind each layer's design effect (the p-value may use more, or fewer).
_DESIGN_PERMUTATIONS = 200
# Permutations scored per step of the sequential ("auto") test.
_BATCH = 200


@dataclass
class _LayerScore:
    """Everything computed for one layer (a row of the table)."""

    layer: str
    features: int
    pred: NDArray[np.int64] | None = None
    control_pred: NDArray[np.int64] | None = None
    ridge_accuracy: float = float("nan")
    p: float = float("nan")
    n_permutations: int = 0
    design_effect: float = 1.0
    note: str = ""


class _Classifier(Constraint):
    """A scikit-learn style classifier: anything with ``fit`` and ``predict``."""

    def __call__(self, value: Any) -> bool:
        return hasattr(value, "fit") and hasattr(value, "predict")

    def __str__(self) -> str:
        return "a scikit-learn classifier with fit/predict"


@register_analysis
class Probing(Analysis):
    """Cross-validated linear probes per layer, with CIs, permutation p-values and control tasks.

    Args:
        target: Probe-set column to predict (``"label"``, a group or a metadata column).
        estimator: A scikit-learn classifier, cloned and fitted on the raw activations of each
            fold. ``None`` (default) standardises each fold on its training part and fits
            :class:`~sklearn.linear_model.LogisticRegression` (L-BFGS, C = 1), each fold
            starting from the previous fold's solution: the L2-penalised objective is strictly
            convex, so the start changes only the number of iterations (2-4x fewer in
            ``benchmarks/probing.py``), not the optimum.
        standardize: Scale each unit of the default probe to unit variance (after centring).
            Standardising tames the outlier dimensions of transformers (Kovaleva et al. 2021)
            and speeds up L-BFGS, but it also shrinks high-variance units relative to the L2
            penalty, which changes accuracy when the signal lives in them. ``False`` only
            centres, which the unpenalised intercept absorbs exactly: the probe is then
            scikit-learn's default ``LogisticRegression()`` on the raw activations, fitted to
            convergence.
        cv: Number of stratified folds.
        control_task: Also fit the probe on a control task (Hewitt & Liang 2019).
        control_column: Column whose values are the *types* of the control task: examples of
            one type share one random label drawn from the target's empirical distribution (the
            word types of Hewitt & Liang). ``None``: each example is its own type, i.e. the
            labels are shuffled; with no repeated types no probe can beat chance on held-out
            folds, so selectivity becomes accuracy above a random-label baseline.
        n_permutations: Label permutations for the p-value (0 disables it). With ``L`` layers the
            smallest Holm-adjusted p-value is ``L / (n_permutations + 1)``; the table records
            each layer's resolution ``1 / (n + 1)`` and a note says when it keeps every
            corrected p-value above ``alpha``. ``"auto"`` uses
            :func:`neuronmap.stats.permutation_count` (resolution ``alpha / (10 L)``) with
            Besag & Clifford's sequential stopping after 10 exceedances, so null layers cost
            a few hundred permutations.
        n_resamples: Bootstrap resamples for the confidence intervals (``n_bootstrap`` is its
            deprecated name).
        confidence: Coverage of the intervals.
        max_components: ``None`` (default): use every dimension. An integer projects wider
            layers of the default probe onto that many leading principal components of the
            training fold first: exact when the fold has at most that many examples (the
            solution lies in the span of the centred training rows), an approximation otherwise
            that can lose signal outside the leading components.
        max_iter: L-BFGS iterations of the default probe (usually far fewer are needed; a
            note reports when they were not enough).
        p_adjust: Multiple-comparison method across layers (any of
            :data:`neuronmap.stats.PVALUE_METHODS`).
        alpha: Significance level for the ``significant`` column and resolution notes.
        layers: Optional selectors restricting the analysis to some captured layers.
        blas_threads: BLAS threads while the probes are fitted (via threadpoolctl). The
            per-fold problems are small (``n x d`` with ``d`` a layer's width), and a
            multi-threaded BLAS on them mostly waits for its own threads, the more so when the
            cores are shared with a training loop or PyTorch's OpenMP pool: 1 (default) made the
            stage 1.7x faster on two cores at load average 2, and 11-15x at 3-4, with the same
            numbers (``benchmarks/full_run.py``). ``None`` leaves the thread pools as they are.
        name: Name of this instance (metric keys), to run a second one beside the first.

    Raises:
        InvalidParameterError: A parameter outside its allowed range.

    Metrics (per layer): ``accuracy`` (with ``_ci_low``/``_ci_high``/``_p``/``_p_adj``),
    ``macro_f1`` (with CI), ``control_accuracy``, ``selectivity`` (with CI, McNemar ``_p`` and
    ``_p_adj``).

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(n=60), layers=["net.0"],
        ...                        analyses=[Probing(n_permutations=99)], reporters=[])
        >>> report = monitor.run(tiny_mlp(), step=0)
        >>> report.metrics["neuronmap/probing/net.0/accuracy"] > 0.8
        True
    """

    name = "probing"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "target": [str],
        "estimator": [None, _Classifier()],
        "standardize": [bool],
        "control_task": [bool],
        "control_column": [None, str],
        "n_permutations": [Interval(int, 0, None), "auto"],
        "max_components": [None, Interval(int, 1, None)],
        "max_iter": [Interval(int, 1, None)],
        "blas_threads": [None, Interval(int, 1, None)],
    }
    _renamed_parameters: ClassVar[dict[str, str]] = {"n_bootstrap": "n_resamples"}
    probe_columns = ("target", "control_column")
    headline_metrics = ("accuracy", "selectivity")

    def findings(self, result: AnalysisResult) -> list[Finding]:
        """See :func:`neuronmap.analyses._findings.probing_findings`."""
        from neuronmap.analyses._findings import probing_findings

        return probing_findings(result, alpha=float(getattr(self, "alpha", 0.05)))

    def __init__(
        self,
        target: str = "label",
        *,
        estimator: Any = None,
        standardize: bool = True,
        cv: int = 5,
        control_task: bool = True,
        control_column: str | None = None,
        n_permutations: int | Literal["auto"] = 1000,
        n_resamples: int = 1000,
        confidence: float = 0.95,
        max_components: int | None = None,
        max_iter: int = 300,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
        blas_threads: int | None = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(layers=layers, name=name)
        self.target = target
        self.estimator = estimator
        self.cv = cv
        self.control_task = control_task
        self.control_column = control_column
        self.n_permutations = n_permutations
        self.n_resamples = n_resamples
        self.confidence = confidence
        self.max_components = max_components
        self.max_iter = max_iter
        self.standardize = standardize
        self.p_adjust = p_adjust
        self.alpha = alpha
        self.blas_threads = blas_threads

    def config(self) -> dict[str, Any]:
        return {**super().config(), "estimator": None if self.estimator is None else repr(self.estimator)}

    # ------------------------------------------------------------------ run
    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        raw = ctx.probe.column(self.target)
        keep = ~pd.isna(raw)
        codes, classes = pd.factorize(pd.Series(raw[keep]), sort=True)
        y = codes.astype(np.int64)
        reason = _unusable_target(self.target, y, list(classes), self.cv)
        if reason:
            return AnalysisResult(self.name, status="skipped", notes=(reason,))
        notes: list[str] = []
        if not keep.all():
            notes.append(f"{int((~keep).sum())} examples with a missing {self.target!r} were left out.")
        rng = np.random.default_rng([ctx.random_state, 1])
        folds = stratified_folds(y, self.cv, random_state=ctx.random_state)
        control = self._control_labels(ctx, keep, y, rng, notes)
        items = self.layer_items(ctx)
        if not items:
            return AnalysisResult(self.name, status="skipped", notes=("No captured layer matches `layers`.",))
        count = self._permutation_count(len(items))
        scores = []
        with _blas_limit(self.blas_threads):
            for layer, acts in items:
                # at least _DESIGN_PERMUTATIONS relabellings: the design effect of every layer's
                # intervals; drawn per layer, so the layers' tests are independent given the labels
                perms = within_fold_permutations(folds, len(y), max(count, _DESIGN_PERMUTATIONS), rng)
                x = np.asarray(acts, dtype=np.float64).reshape(acts.shape[0], -1)[keep]
                scores.append(self._score_layer(layer, x, y, control, folds, perms, count, ctx.random_state))
        notes += [f"{s.layer}: {s.note}" for s in scores if s.note]
        if count and len(scores) / (count + 1) > self.alpha:
            notes.append(
                f"p-value resolution: with n_permutations={count} no p-value is below 1/{count + 1} = "
                f"{1 / (count + 1):.3g}, so after correcting over {len(scores)} layers none can fall below "
                f"alpha={self.alpha}; raise n_permutations (or use 'auto')."
            )
        table = self._table(scores, y, control, folds, ctx.random_state)
        metrics = _metrics(table)
        chance = float(np.bincount(y).max() / len(y))
        figure = _figure(table, chance=chance, confidence=self.confidence,
                         title=f"Probing {self.target!r} ({self.cv}-fold CV)")
        return AnalysisResult(
            self.name, metrics=metrics, tables={"probing": table}, figures={"accuracy": figure}, notes=tuple(notes)
        )

    def _control_labels(
        self,
        ctx: AnalysisContext,
        keep: NDArray[np.bool_],
        y: NDArray[np.int64],
        rng: np.random.Generator,
        notes: list[str],
    ) -> NDArray[np.int64] | None:
        """Hewitt & Liang (2019, Sec. 2) control labels: one random label per type."""
        if not self.control_task:
            return None
        if self.control_column is None:
            control = rng.permutation(y)
        else:
            _, types = np.unique(ctx.probe.column(self.control_column)[keep].astype(str), return_inverse=True)
            per_type = rng.choice(y, size=int(types.max()) + 1, replace=True)
            control = per_type[types]
        if np.unique(control).size < 2:
            notes.append("The control task drew a single label for every type; control metrics are NaN.")
            return None
        return np.asarray(control, dtype=np.int64)

    def _score_layer(
        self,
        layer: str,
        x: NDArray[np.float64],
        y: NDArray[np.int64],
        control: NDArray[np.int64] | None,
        folds: list[tuple[NDArray[np.intp], NDArray[np.intp]]],
        perms: NDArray[np.intp],
        count: int,
        random_state: int,
    ) -> _LayerScore:
        from sklearn.exceptions import ConvergenceWarning

        score = _LayerScore(layer, features=x.shape[1])
        if not np.isfinite(x).all():
            score.note = "activations contain NaN or Inf; layer skipped."
            return score
        data = prepare_folds(x, folds, max_components=self.max_components, random_state=random_state,
                             standardize=self.standardize)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            score.pred = self._cross_val_predict(x, y, data)
            if control is not None:
                score.control_pred = self._cross_val_predict(x, control, data)
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                score.note = f"the probe did not converge in max_iter={self.max_iter} iterations on some fold."
            else:  # not ours to swallow
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        # accuracy with ties broken by the held-out margin (see ridge_cv_statistic): exact p-values
        first = ridge_cv_statistic(data, y, np.vstack([np.arange(len(y)), perms[:_DESIGN_PERMUTATIONS]]))
        score.ridge_accuracy = np.floor(first[0]) / len(y)
        score.design_effect = _design_effect(np.floor(first[1:]), len(y))
        if count and self.n_permutations == "auto":
            batches = (first[1:] if start == 0 else ridge_cv_statistic(data, y, perms[start : start + _BATCH])
                       for start in [0, *range(_DESIGN_PERMUTATIONS, count, _BATCH)])  # fmt: skip
            score.p, score.n_permutations = sequential_permutation_pvalue(float(first[0]), batches)
        elif count:
            null = first[1 : count + 1]
            if count > len(null):
                null = np.concatenate([null, ridge_cv_statistic(data, y, perms[len(null) : count])])
            # Phipson & Smyth (2010): the observed labelling counts as one permutation
            score.p = float((1 + np.count_nonzero(null >= first[0])) / (1 + count))
            score.n_permutations = count
        return score

    def _permutation_count(self, n_layers: int) -> int:
        if self.n_permutations == "auto":
            return permutation_count(n_layers, alpha=self.alpha)
        return int(self.n_permutations)

    def _cross_val_predict(
        self, x: NDArray[np.float64], y: NDArray[np.int64], data: list[FoldData]
    ) -> NDArray[np.int64]:
        from sklearn.base import clone
        from sklearn.linear_model import LogisticRegression

        pred = np.empty(len(y), dtype=np.int64)
        n_classes = np.unique(y).size
        # warm starts need one coordinate system and every class in every training fold
        warm = not any(f.projected for f in data) and all(np.unique(y[f.train]).size == n_classes for f in data)
        shared = LogisticRegression(max_iter=self.max_iter, warm_start=warm)
        for fold in data:
            if self.estimator is None:
                model = shared if warm else clone(shared)
                train, test = fold.z_train, fold.z_test
            else:
                model = clone(self.estimator)
                train, test = x[fold.train], x[fold.test]
            model.fit(train, y[fold.train])
            pred[fold.test] = np.asarray(model.predict(test), dtype=np.int64)
        return pred

    # ------------------------------------------------------------------ statistics and output
    def _table(
        self, scores: Sequence[_LayerScore], y: NDArray[np.int64], control: NDArray[np.int64] | None,
        folds: list[tuple[NDArray[np.intp], NDArray[np.intp]]], seed: int,
    ) -> pd.DataFrame:  # fmt: skip
        ci_kw: dict[str, Any] = {"n_resamples": self.n_resamples, "confidence": self.confidence, "random_state": seed}
        rows = []
        for s in scores:
            row: dict[str, Any] = {"layer": s.layer, "features": s.features, "n": len(y)}
            if s.pred is not None:
                correct = (s.pred == y).astype(np.float64)
                acc = wilson_interval(float(correct.sum()), len(y), confidence=self.confidence,
                                      design_effect=s.design_effect)
                f1 = _widened(bootstrap_ci(macro_f1, y, s.pred, paired=True, **ci_kw), s.design_effect)
                row |= {"accuracy": acc.estimate, "accuracy_ci_low": acc.low, "accuracy_ci_high": acc.high,
                        "macro_f1": f1.estimate, "macro_f1_ci_low": f1.low, "macro_f1_ci_high": f1.high,
                        "design_effect": s.design_effect}
            row |= {"ridge_accuracy": s.ridge_accuracy, "p": s.p, "n_permutations": s.n_permutations,
                    "p_resolution": 1.0 / (s.n_permutations + 1) if s.n_permutations else np.nan}
            if s.pred is not None and s.control_pred is not None and control is not None:
                correct = (s.pred == y).astype(np.float64)
                control_correct = (s.control_pred == control).astype(np.float64)
                per_fold = [float(correct[te].mean() - control_correct[te].mean()) for _, te in folds]
                sel = corrected_resampled_ttest(per_fold, test_fraction=1.0 / len(folds), confidence=self.confidence,
                                                estimate=float(correct.mean() - control_correct.mean()))
                row |= {"control_accuracy": float(control_correct.mean()), "selectivity": sel.estimate,
                        "selectivity_ci_low": sel.low, "selectivity_ci_high": sel.high, "selectivity_p": sel.pvalue}
            row["note"] = s.note
            rows.append(row)
        table = pd.DataFrame(rows)
        for column in ("accuracy", "p", "control_accuracy", "selectivity", "selectivity_p"):
            if column not in table:
                table[column] = np.nan
        table["p_adj"] = adjust_pvalues(table["p"].to_numpy(dtype=float), method=self.p_adjust, alpha=self.alpha)
        table["significant"] = table["p_adj"] < self.alpha
        table["selectivity_p_adj"] = adjust_pvalues(
            table["selectivity_p"].to_numpy(dtype=float), method=self.p_adjust, alpha=self.alpha
        )
        return table


def _blas_limit(threads: int | None) -> contextlib.AbstractContextManager[Any]:
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    return threadpool_limits(limits=threads, user_api="blas")


def _design_effect(null_counts: NDArray[np.floating[Any]] | NDArray[np.int64], n: int) -> float:
    """Variance of the permuted CV accuracies over the binomial variance at their mean (>= 1)."""
    if len(null_counts) < 2:
        return 1.0
    acc = null_counts / n
    mean = float(acc.mean())
    binomial = mean * (1.0 - mean) / n
    return max(1.0, float(acc.var(ddof=1)) / binomial) if binomial > 0 else 1.0


def _widened(ci: Any, factor: float) -> Any:
    """A bootstrap interval scaled about its estimate by ``sqrt(design effect)``, clipped to [0, 1]."""
    from dataclasses import replace

    scale = float(np.sqrt(factor))
    return replace(ci, low=max(0.0, ci.estimate - scale * (ci.estimate - ci.low)),
                   high=min(1.0, ci.estimate + scale * (ci.high - ci.estimate)))


def _unusable_target(target: str, y: NDArray[np.int64], classes: list[Any], cv: int) -> str:
    """Why ``y`` cannot be probed with ``cv`` stratified folds ('' when it can)."""
    if len(classes) < 2:
        return f"Target {target!r} has {len(classes)} class(es) {classes}; probing needs at least 2."
    counts = np.bincount(y, minlength=len(classes))
    rare = {str(c): int(k) for c, k in zip(classes, counts, strict=True) if k < cv}
    if rare:
        return (
            f"Target {target!r} has classes with fewer examples than the {cv} folds: {rare}. "
            f"Lower cv (at most {int(counts.min())}) or add examples of those classes."
        )
    return ""


def _metrics(table: pd.DataFrame) -> MetricSet:
    metrics = MetricSet()
    for row in table.to_dict(orient="records"):
        if not np.isfinite(row["accuracy"]):
            continue
        layer = row["layer"]
        p, p_adj = (row["p"], row["p_adj"]) if np.isfinite(row["p"]) else (None, None)
        metrics.add(layer, "accuracy", row["accuracy"], ci=(row["accuracy_ci_low"], row["accuracy_ci_high"]),
                    p=p, p_adj=p_adj)
        metrics.add(layer, "macro_f1", row["macro_f1"], ci=(row["macro_f1_ci_low"], row["macro_f1_ci_high"]))
        if np.isfinite(row["selectivity"]):
            metrics.add(layer, "control_accuracy", row["control_accuracy"])
            metrics.add(layer, "selectivity", row["selectivity"],
                        ci=(row["selectivity_ci_low"], row["selectivity_ci_high"]),
                        p=row["selectivity_p"], p_adj=row["selectivity_p_adj"])
    return metrics


def _figure(table: pd.DataFrame, *, chance: float, confidence: float, title: str) -> Figure:
    fig = Figure(figsize=(max(4.0, 0.5 * len(table) + 2.5), 3.2))
    ax = fig.subplots()
    x = np.arange(len(table))
    ax.plot(x, table["accuracy"], marker="o", color="#1f5fa8", label="probe accuracy")
    if "accuracy_ci_low" in table:
        ax.fill_between(x, table["accuracy_ci_low"], table["accuracy_ci_high"], color="#1f5fa8", alpha=0.2,
                        label=f"{confidence:.0%} bootstrap CI")
    if table["control_accuracy"].notna().any():
        ax.plot(x, table["control_accuracy"], marker="s", ls="--", color="#b3261e", label="control task")
    ax.axhline(chance, color="#555", ls=":", lw=1, label=f"majority class ({chance:.2f})")
    significant = table["significant"].to_numpy(dtype=bool)
    if significant.any():
        ax.scatter(x[significant], table["accuracy"][significant], marker="*", s=90, color="#e8a317",
                   zorder=3, label="significant (corrected)")
    ax.set_xticks(x, table["layer"], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
