"""Regression probing: how well a linear read-out of each layer predicts a numeric probe-set column.

The regression twin of :class:`~neuronmap.analyses.probing.Probing` for targets such as a
number's magnitude, a year, a bracket depth or a latitude. For every monitored layer and
target a ridge probe is fitted by k-fold cross-validation, its penalty chosen inside each
training fold by generalised cross-validation (Golub, Heath & Wahba 1979, via
:class:`sklearn.linear_model.RidgeCV`), and scored on the pooled held-out predictions:

* **R²** with a paired BCa bootstrap interval over examples (Efron 1987);
* a **permutation p-value** of "the layer carries no linear information about the target"
  (Ojala & Garriga 2010), corrected across layers and targets (Holm 1979 by default). The
  statistic is the held-out R² of a ridge probe with a label-free penalty, which any
  permutation recomputes exactly, so the test is exact; each fold's hat matrix serves all
  permutations in one product (Phipson & Smyth 2010 for the ``+1``);
* **controls**: the same probe on a *control task* (Hewitt & Liang 2019: the target shuffled,
  or one random value per type of ``control_column``), the **selectivity** R² - control R²
  with a paired bootstrap CI, and a **random-feature** baseline (the probe on Gaussian
  features of the layer's width: what a probe of this capacity reaches on nothing);
* with ``holdout_column``, **held-out-group R²**: folds hold out whole groups (regions,
  periods), so the probe must extrapolate to values it never saw (Gurnee & Tegmark 2023, sec. 4).

References:
    Alain & Bengio (2017). Understanding intermediate layers using linear classifier probes. ICLR workshop.
    Golub, Heath & Wahba (1979). Generalized Cross-Validation as a Method for Choosing a Good
    Ridge Parameter. Technometrics 21(2).
    Hewitt & Liang (2019). Designing and Interpreting Probes with Control Tasks. EMNLP.
    Ojala & Garriga (2010). Permutation Tests for Studying Classifier Performance. JMLR 11.
    Phipson & Smyth (2010). Permutation p-values should never be zero. SAGMB 9(1).
    Gurnee & Tegmark (2023). Language Models Represent Space and Time. arXiv:2310.02207.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

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
from neuronmap.analyses.params import Columns, Interval
from neuronmap.analyses.probing import _blas_limit
from neuronmap.errors import ProbeSetError
from neuronmap.metrics.probing import (
    global_permutations,
    oof_ridge_cv,
    permutation_r2,
    prepare_folds,
    r2_score,
    regression_folds,
)
from neuronmap.stats import adjust_pvalues, bootstrap_ci

__all__ = ["RegressionProbing"]


@register_analysis
class RegressionProbing(Analysis):
    """Cross-validated ridge probes for numeric targets: R² with CI, permutation p, controls.

    Args:
        target: Numeric probe-set column(s) to predict.
        cv: Number of folds.
        standardize: Scale each unit to unit variance within each training fold.
        holdout_column: Column whose groups are held out whole for the ``holdout_r2`` score.
        control_task: Also fit the probe on a control task (shuffled target).
        control_column: Types of the control task (one random target value per type).
        random_features: Also fit the probe on Gaussian features of the layer's width.
        n_permutations: Permutations for the p-value (0 disables it).
        n_resamples: Bootstrap resamples (``n_bootstrap`` is its deprecated name). confidence: Interval coverage.
        p_adjust: Correction across layers and targets. alpha: Significance level.
        blas_threads: BLAS threads while fitting (see :class:`~neuronmap.analyses.probing.Probing`).
        layers, name: As for every analysis.

    Metrics (per layer; prefixed ``<target>_`` when there are several targets): ``r2`` (CI,
    ``_p``, ``_p_adj``), ``rmse``, ``control_r2``, ``selectivity`` (CI), ``random_feature_r2``,
    ``holdout_r2`` (CI, with ``holdout_column``).

    Example:
        >>> import numpy as np, torch, neuronmap as nm
        >>> x = torch.randn(80, 6)
        >>> probe = nm.ProbeSet(x, metadata={"size": x[:, 0].numpy() * 3})
        >>> monitor = nm.NeuronMap(probe, layers=["0"], reporters=[],
        ...                        analyses=[RegressionProbing("size", n_permutations=99, n_resamples=99)])
        >>> m = monitor.run(torch.nn.Sequential(torch.nn.Linear(6, 6)), step=0).metrics
        >>> m["neuronmap/regression_probing/0/r2"] > 0.9
        True
    """

    name = "regression_probing"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "target": [Columns()],
        "standardize": [bool],
        "holdout_column": [None, str],
        "control_task": [bool],
        "control_column": [None, str],
        "random_features": [bool],
        "blas_threads": [None, Interval(int, 1, None)],
    }
    _renamed_parameters: ClassVar[dict[str, str]] = {"n_bootstrap": "n_resamples"}

    def __init__(
        self,
        target: str | Sequence[str] = "label",
        *,
        cv: int = 5,
        standardize: bool = True,
        holdout_column: str | None = None,
        control_task: bool = True,
        control_column: str | None = None,
        random_features: bool = True,
        n_permutations: int = 1000,
        n_resamples: int = 1000,
        confidence: float = 0.95,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
        blas_threads: int | None = 1,
        name: str | None = None,
    ) -> None:
        super().__init__(layers=layers, name=name)
        self.target = target
        self.cv = cv
        self.standardize = standardize
        self.holdout_column = holdout_column
        self.control_task = control_task
        self.control_column = control_column
        self.random_features = random_features
        self.n_permutations = n_permutations
        self.n_resamples = n_resamples
        self.confidence = confidence
        self.p_adjust = p_adjust
        self.alpha = alpha
        self.blas_threads = blas_threads

    # ------------------------------------------------------------------ run
    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        scored = self.score(ctx)
        if isinstance(scored, str):
            return AnalysisResult(self.name, status="skipped", notes=(scored,))
        table, _, _, notes = scored
        figure = r2_figure(table, confidence=self.confidence, title=f"Regression probes ({self.cv}-fold CV)")
        return AnalysisResult(self.name, metrics=self.metrics(table), tables={"regression_probing": table},
                              figures={"r2": figure}, notes=tuple(notes))  # fmt: skip

    def score(
        self, ctx: AnalysisContext
    ) -> tuple[
        pd.DataFrame, dict[tuple[str, str], NDArray[np.float64]], dict[str, NDArray[np.float64]], list[str]
    ] | str:
        """The per-(layer, target) table, held-out predictions and targets, and notes; or why it was skipped."""
        ys, keep = self._targets(ctx)
        notes: list[str] = []
        if not keep.all():
            notes.append(f"{int((~keep).sum())} examples with a missing target were left out.")
        n = int(keep.sum())
        if n < 2 * self.cv:
            return (f"Only {n} examples with every target {self._target_columns()}; "
                    f"{type(self).__name__} needs at least {2 * self.cv}.")
        items = self.layer_items(ctx)
        if not items:
            return "No captured layer matches `layers`."
        rng = np.random.default_rng([ctx.random_state, 11])
        folds = regression_folds(n, self.cv, random_state=ctx.random_state)
        holdout, holdout_column = None, self._holdout(ctx)
        if holdout_column is not None:
            groups = ctx.probe.column(holdout_column)[keep]
            if len(np.unique(groups.astype(str))) < 2:
                notes.append(f"holdout_column {holdout_column!r} has fewer than 2 groups; no held-out score.")
            else:
                holdout = regression_folds(n, self.cv, random_state=ctx.random_state, groups=groups)
        perms = global_permutations(n, self.n_permutations, rng)
        controls = {t: self._control(ctx, keep, y, rng) for t, y in ys.items()} if self.control_task else {}
        rows, preds = [], {}
        with _blas_limit(self.blas_threads):
            for layer, acts in items:
                x = np.asarray(acts, dtype=np.float64).reshape(acts.shape[0], -1)[keep]
                if not np.isfinite(x).all():
                    notes.append(f"{layer}: activations contain NaN or Inf; layer skipped.")
                    continue
                data = prepare_folds(x, folds, max_components=None, random_state=ctx.random_state,
                                     standardize=self.standardize)  # fmt: skip
                hold = None if holdout is None else prepare_folds(
                    x, holdout, max_components=None, random_state=ctx.random_state, standardize=self.standardize)
                noise = None
                if self.random_features:
                    z = np.random.default_rng([ctx.random_state, 12]).standard_normal(x.shape)
                    noise = prepare_folds(z, folds, max_components=None, random_state=ctx.random_state)
                for t, y in ys.items():
                    row, pred = self._score(layer, t, x.shape[1], y, data, hold, noise, controls.get(t), perms, ctx)
                    rows.append(row)
                    preds[(layer, t)] = pred
        if not rows:
            return "No layer could be scored: " + " ".join(notes)
        table = pd.DataFrame(rows)
        table["p_adj"] = adjust_pvalues(table["p"].to_numpy(float), method=self.p_adjust, alpha=self.alpha)
        table["significant"] = table["p_adj"] < self.alpha
        if self.n_permutations and len(table) / (self.n_permutations + 1) > self.alpha:
            notes.append(f"With n_permutations={self.n_permutations} and {len(table)} tests no corrected p-value "
                         f"can fall below alpha={self.alpha}; raise n_permutations.")  # fmt: skip
        return table, preds, ys, notes

    def _target_columns(self) -> list[str]:
        """The numeric probe-set columns to predict."""
        return [self.target] if isinstance(self.target, str) else list(self.target)

    def _holdout(self, ctx: AnalysisContext) -> str | None:
        """The column whose groups are held out whole (``None``: no held-out score)."""
        return self.holdout_column

    def _targets(self, ctx: AnalysisContext) -> tuple[dict[str, NDArray[np.float64]], NDArray[np.bool_]]:
        raw = {}
        for t in self._target_columns():
            values = pd.to_numeric(pd.Series(ctx.probe.column(t)), errors="coerce")
            if values.notna().sum() == 0:
                raise ProbeSetError(
                    f"Target {t!r} of {type(self).__name__} has no numeric value in probe set "
                    f"{ctx.probe.name!r}; regression probes need numbers (use Probing for classes)."
                )
            raw[t] = values.to_numpy(dtype=np.float64)
        keep = np.logical_and.reduce([np.isfinite(v) for v in raw.values()])
        return {t: v[keep] for t, v in raw.items()}, keep

    def _control(self, ctx: AnalysisContext, keep: NDArray[np.bool_], y: NDArray[np.float64],
                 rng: np.random.Generator) -> NDArray[np.float64]:  # fmt: skip
        if self.control_column is None:
            return rng.permutation(y)
        _, types = np.unique(ctx.probe.column(self.control_column)[keep].astype(str), return_inverse=True)
        return rng.choice(y, size=int(types.max()) + 1, replace=True)[types]

    def _score(self, layer: str, target: str, width: int, y: NDArray[np.float64], data: Any, hold: Any,
               noise: Any, control: NDArray[np.float64] | None, perms: NDArray[np.intp],
               ctx: AnalysisContext) -> tuple[dict[str, Any], NDArray[np.float64]]:  # fmt: skip
        kw: dict[str, Any] = {"n_resamples": self.n_resamples, "confidence": self.confidence,
                              "random_state": ctx.random_state, "paired": True}  # fmt: skip
        pred, alphas = oof_ridge_cv(data, y)
        ci = bootstrap_ci(r2_score, y, pred, **kw)
        row: dict[str, Any] = {"layer": layer, "target": target, "features": width, "n": len(y),
                               "r2": ci.estimate, "r2_ci_low": ci.low, "r2_ci_high": ci.high,
                               "rmse": float(np.sqrt(np.mean((y - pred) ** 2))),
                               "ridge_alpha": float(np.median(alphas)),
                               "p": np.nan}  # fmt: skip
        if self.n_permutations:
            stats = permutation_r2(data, y, np.vstack([np.arange(len(y)), perms]))
            row["p"] = float((1 + np.count_nonzero(stats[1:] >= stats[0])) / (1 + len(perms)))
        if control is not None:
            cpred, _ = oof_ridge_cv(data, control)
            sel = bootstrap_ci(_r2_difference, y, pred, control, cpred, **kw)
            row |= {"control_r2": float(r2_score(control, cpred)), "selectivity": sel.estimate,
                    "selectivity_ci_low": sel.low, "selectivity_ci_high": sel.high}  # fmt: skip
        if noise is not None:
            row["random_feature_r2"] = float(r2_score(y, oof_ridge_cv(noise, y)[0]))
        if hold is not None:
            hpred, _ = oof_ridge_cv(hold, y)
            hci = bootstrap_ci(r2_score, y, hpred, **kw)
            row |= {"holdout_r2": hci.estimate, "holdout_r2_ci_low": hci.low, "holdout_r2_ci_high": hci.high}
        return row, pred

    def metrics(self, table: pd.DataFrame) -> MetricSet:
        """Metric keys of a :meth:`score` table (``<target>_`` prefixes when there are several targets)."""
        m = MetricSet()
        for r in table.to_dict(orient="records"):
            pre = f"{r['target']}_" if len(self._target_columns()) > 1 else ""
            p = r["p"] if np.isfinite(r["p"]) else None
            m.add(r["layer"], f"{pre}r2", r["r2"], ci=(r["r2_ci_low"], r["r2_ci_high"]), p=p,
                  p_adj=r["p_adj"] if p is not None else None)
            m.add(r["layer"], f"{pre}rmse", r["rmse"])
            if "control_r2" in r and np.isfinite(r["control_r2"]):
                m.add(r["layer"], f"{pre}control_r2", r["control_r2"])
                m.add(r["layer"], f"{pre}selectivity", r["selectivity"],
                      ci=(r["selectivity_ci_low"], r["selectivity_ci_high"]))
            if "random_feature_r2" in r:
                m.add(r["layer"], f"{pre}random_feature_r2", r["random_feature_r2"])
            if "holdout_r2" in r and np.isfinite(r["holdout_r2"]):
                m.add(r["layer"], f"{pre}holdout_r2", r["holdout_r2"],
                      ci=(r["holdout_r2_ci_low"], r["holdout_r2_ci_high"]))
        return m


def _r2_difference(y: Any, pred: Any, yc: Any, predc: Any, axis: int = -1) -> NDArray[np.float64]:
    return np.asarray(r2_score(y, pred, axis=axis) - r2_score(yc, predc, axis=axis))


def r2_figure(table: pd.DataFrame, *, confidence: float, title: str) -> Figure:
    """Held-out R² per layer (one panel per target) with CI, control, random-feature and held-out-group lines."""
    targets = list(dict.fromkeys(table["target"]))
    layers = list(dict.fromkeys(table["layer"]))
    fig = Figure(figsize=(max(4.0, 0.5 * len(layers) + 2.5) * min(len(targets), 3), 3.2))
    axes = fig.subplots(1, len(targets), squeeze=False)[0]
    x = np.arange(len(layers))
    for ax, target in zip(axes, targets, strict=True):
        part = table[table["target"] == target].set_index("layer").reindex(layers)
        ax.plot(x, part["r2"], marker="o", color="#1f5fa8", label="R² (held-out folds)")
        ax.fill_between(x, part["r2_ci_low"], part["r2_ci_high"], color="#1f5fa8", alpha=0.2,
                        label=f"{confidence:.0%} bootstrap CI")
        for column, style, color, label in (("holdout_r2", "-.", "#2e7d32", "held-out groups"),
                                            ("control_r2", "--", "#b3261e", "control task"),
                                            ("random_feature_r2", ":", "#555", "random features")):  # fmt: skip
            if column in part and part[column].notna().any():
                ax.plot(x, part[column], ls=style, marker=".", color=color, label=label)
        sig = part["significant"].fillna(False).to_numpy(dtype=bool)
        if sig.any():
            ax.scatter(x[sig], part["r2"].to_numpy()[sig], marker="*", s=90, color="#e8a317", zorder=3,
                       label="significant (corrected)")
        ax.axhline(0.0, color="#999", lw=0.8)
        ax.set_xticks(x, layers, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(min(-0.2, float(np.nanmin(part[["r2"]].to_numpy())) - 0.05), 1.02)
        ax.set_ylabel("R²")
        ax.set_title(f"{title}: {target}", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig
