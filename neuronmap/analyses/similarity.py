"""Representational similarity analyses: CKA between layers and over training, and RSA.

* :class:`CKA` compares every pair of monitored layers with linear CKA (Kornblith et al. 2019)
  and tracks *drift*: each layer against itself at the first run and at the previous run.
* :class:`RSA` correlates each layer's dissimilarity matrix with a model RDM built from a
  probe-set column (same label = 0, different = 1) or with a reference layer's RDM, with a
  Mantel permutation p-value corrected across layers (Kriegeskorte et al. 2008).
* :func:`compare_models` is the cross-model comparison (every layer of one model against every
  layer of another on the same probe set) used by ``neuronmap compare``.

The numerics are :mod:`neuronmap.metrics.similarity`; this module only orchestrates them.

References:
    Kornblith, Norouzi, Lee & Hinton (2019). Similarity of Neural Network Representations
    Revisited. ICML.
    Kriegeskorte, Mur & Bandettini (2008). Representational similarity analysis. Front. Syst.
    Neurosci. 2:4.
    Mantel (1967). The detection of disease clustering and a generalized regression approach.
    Cancer Research 27(2).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, cast

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import NDArray
from scipy.spatial.distance import pdist

from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval, Options
from neuronmap.errors import InvalidParameterError, LayerNotFoundError
from neuronmap.findings import Finding
from neuronmap.metrics.similarity import cka_matrix, linear_cka, rdm, rsa
from neuronmap.stats import adjust_pvalues, resolution_note

__all__ = ["CKA", "RSA", "cka_heatmap", "compare_models"]

Metric = Literal["correlation", "euclidean", "cosine"]
Method = Literal["spearman", "kendall", "pearson"]
_METRICS = ("correlation", "euclidean", "cosine")
_METHODS = ("spearman", "kendall", "pearson")
_DRIFT = ("drift_first", "drift_previous")


def _flat(acts: Any) -> NDArray[np.float64]:
    x = np.asarray(acts, dtype=np.float64)
    return x.reshape(x.shape[0], -1)


@register_analysis
class CKA(Analysis):
    """Layer x layer linear CKA, and each layer's drift from its first and previous runs.

    Drift metrics are ``neuronmap/cka/<layer>/drift_first`` (CKA with the same layer at the
    first run this monitor saw: 1 at that run) and ``drift_previous`` (CKA with the previous
    run; absent at the first run). A value of 1 means the representation changed at most by
    an orthogonal transform and isotropic scaling (Kornblith et al. 2019, Sec. 3); lower
    values mean more change.

    The references are the activations themselves, kept in memory (float32 copies, one per
    monitored layer for the first and for the previous run). They are not written into
    :meth:`state_dict`, which holds only the steps they came from: a resumed run starts a new
    reference at its first scheduled run, and a note names the original reference step. The
    reference also restarts when the probe set size or a layer's width changes.

    Args:
        debiased: Use the debiased HSIC estimator (Song et al. 2012; Nguyen et al. 2021),
            advisable when layers are wide compared with the probe set.
        drift: Track drift across runs.
        layers: Optional selectors restricting the analysis to some captured layers.
        device: Where the CKA products run. ``"auto"`` (default) uses the monitor's device
            when it is a GPU and numpy on the CPU otherwise; ``None`` always uses numpy; a
            torch device (``"cuda:1"``) forces that device. The values agree to rounding.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.*"], analyses=[CKA()], reporters=[])
        >>> report = monitor.run(tiny_mlp(), step=0)
        >>> report.metrics["neuronmap/cka/net.0/drift_first"]
        1.0
    """

    name = "cka"
    headline_metrics = ("drift_first", "drift_previous")
    # device needs torch to check (and CUDA to be present): resolve_device checks it in __init__
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "debiased": [bool], "drift": [bool], "device": ["no_validation"],
    }

    def findings(self, result: AnalysisResult) -> list[Finding]:
        """See :func:`neuronmap.analyses._findings.cka_findings`."""
        from neuronmap.analyses._findings import cka_findings

        return cka_findings(result)

    def __init__(
        self,
        *,
        debiased: bool = False,
        drift: bool = True,
        layers: str | list[str] | None = None,
        device: Any = "auto",
    ) -> None:
        super().__init__(layers=layers)
        self.debiased = debiased
        self.drift = drift
        if device not in ("auto", None):
            from neuronmap.metrics._cka_torch import resolve_device

            try:
                resolve_device(device)  # a bad device fails here, not at the first scheduled run
            except InvalidParameterError as err:
                raise InvalidParameterError(f"CKA: {err}") from None
        self.device = device
        self._first: dict[str, NDArray[np.float32]] = {}
        self._previous: dict[str, NDArray[np.float32]] = {}
        self._first_step: int | None = None
        self._previous_step: int | None = None
        self._restored: dict[str, Any] = {}

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        acts = {layer: _flat(x) for layer, x in self.layer_items(ctx)}
        if not acts:
            return AnalysisResult(self.name, status="skipped", notes=("No captured layer matches `layers`.",))
        notes: list[str] = []
        device = _cka_device(self.device, ctx)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            matrix = cast(pd.DataFrame, cka_matrix(acts, debiased=self.debiased, device=device))
        notes += sorted({str(w.message) for w in caught})
        title = f"{'Debiased' if self.debiased else 'Linear'} CKA between layers (step {ctx.step})"
        figures: dict[str, Figure] = {"heatmap": cka_heatmap(matrix, title=title)}
        metrics = MetricSet()
        if self.drift:
            notes += self._drift(acts, ctx.step, metrics, device)
            figures["drift"] = _drift_figure(ctx, metrics, list(acts))
        table = matrix.rename_axis("layer").reset_index()
        return AnalysisResult(self.name, metrics=metrics, tables={"cka": table}, figures=figures, notes=tuple(notes))

    def _drift(
        self, acts: Mapping[str, NDArray[np.float64]], step: int, metrics: MetricSet, device: Any
    ) -> list[str]:
        notes = []
        if self._first and not _compatible(self._first, acts):
            notes.append(f"The probe set or a layer's width changed; the drift reference restarts at step {step}.")
            self._first, self._previous, self._first_step = {}, {}, None
        if not self._first:
            if self._restored.get("reference_step") is not None:
                notes.append(
                    f"Drift reference restarted at step {step} after a resume (the original reference was "
                    f"step {self._restored['reference_step']}; activations are not kept in the saved state)."
                )
                self._restored = {}
            self._first = {k: v.astype(np.float32) for k, v in acts.items()}
            self._first_step = step
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero-variance layers: NaN, noted by cka_matrix
            for layer, x in acts.items():
                if layer in self._first:
                    drift = linear_cka(x, self._first[layer], debiased=self.debiased, device=device)
                    metrics.add(layer, "drift_first", drift)
                if layer in self._previous:
                    drift = linear_cka(x, self._previous[layer], debiased=self.debiased, device=device)
                    metrics.add(layer, "drift_previous", drift)
        self._previous = {k: v.astype(np.float32) for k, v in acts.items()}
        self._previous_step = step
        return notes

    def state_dict(self) -> dict[str, Any]:
        """The steps of the drift references (the activations stay in memory only)."""
        return {"reference_step": self._first_step, "previous_step": self._previous_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Forget in-memory references; the next run starts a new one and notes the old step."""
        self._first, self._previous = {}, {}
        self._first_step = self._previous_step = None
        self._restored = dict(state)


def _cka_device(device: Any, ctx: AnalysisContext) -> Any:
    """``CKA(device=...)`` resolved for this run: ``"auto"`` means the monitor's GPU, if any."""
    if device != "auto":
        return device
    return ctx.device if ctx.device is not None and ctx.device.type == "cuda" else None


def _compatible(reference: Mapping[str, NDArray[np.float32]], acts: Mapping[str, NDArray[np.float64]]) -> bool:
    shared = set(reference) & set(acts)
    return bool(shared) and all(reference[k].shape == acts[k].shape for k in shared)


def _drift_figure(ctx: AnalysisContext, current: Mapping[str, float], layers: list[str]) -> Figure:
    """Drift over steps: earlier runs from ``ctx.history`` plus this run's values."""
    from neuronmap.results import HISTORY_COLUMNS

    frame = ctx.history.frame if ctx.history is not None else pd.DataFrame(columns=HISTORY_COLUMNS)
    past = frame[(frame["analysis"] == CKA.name) & frame["metric"].isin(_DRIFT)]
    fig = Figure(figsize=(8, 3))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, metric in zip(axes, _DRIFT, strict=True):
        for layer in layers:
            rows = past[(past["layer"] == layer) & (past["metric"] == metric)]
            steps = [int(s) for s in rows["step"]]
            values = [float(v) for v in rows["value"]]
            if f"{layer}/{metric}" in current:
                steps.append(ctx.step)
                values.append(current[f"{layer}/{metric}"])
            if steps:
                ax.plot(steps, values, marker="o", ms=3, label=layer)
        ax.set_title("vs first run" if metric == "drift_first" else "vs previous run", fontsize=9)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("linear CKA with itself")
    axes[0].set_ylim(min(0.0, axes[0].get_ylim()[0]), 1.05)
    if layers:
        axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle("Representation drift", fontsize=9)
    fig.tight_layout()
    return fig


def cka_heatmap(matrix: pd.DataFrame, *, title: str = "Linear CKA") -> Figure:
    """A heatmap of a CKA matrix (rows and columns labelled with layer names).

    Args:
        matrix: As returned by :func:`~neuronmap.metrics.similarity.cka_matrix` for mappings,
            or by :func:`compare_models`.
        title: Figure title.

    Returns:
        A :class:`matplotlib.figure.Figure` (made without pyplot).
    """
    values = matrix.to_numpy(dtype=np.float64)
    rows, cols = matrix.shape
    # Cells wide and tall enough for an 8 pt "0.97" (about 0.3 in) at the saved size; the
    # constrained layout keeps the rotated tick labels and the colour bar inside the figure.
    fig = Figure(figsize=(min(16.0, 2.8 + 0.6 * cols), min(14.0, 2.2 + 0.45 * rows)), layout="constrained")
    ax = fig.subplots()
    finite = values[np.isfinite(values)]
    low = min(0.0, float(finite.min())) if finite.size else 0.0
    image = ax.imshow(values, vmin=low, vmax=1.0, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(cols), [str(c) for c in matrix.columns], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(rows), [str(r) for r in matrix.index], fontsize=8)
    if rows * cols <= 196:
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
    ax.set_title(title, fontsize=10)
    return fig


def compare_models(
    acts_a: Mapping[str, Any], acts_b: Mapping[str, Any], *, debiased: bool = False
) -> pd.DataFrame:
    """Linear CKA between every layer of model A (rows) and every layer of model B (columns).

    Both models must have run on the same probe set, in the same order (e.g. two checkpoints,
    or a model before and after fine-tuning; Kornblith et al. 2019, Sec. 6).

    Args:
        acts_a: Layer name -> activations ``[n, ...]`` of model A (e.g. an
            :class:`~neuronmap.capture.hooks.Activations`).
        acts_b: The same for model B.
        debiased: Use the debiased HSIC estimator.

    Returns:
        A DataFrame of CKA values, index: layers of A, columns: layers of B.

    Raises:
        InvalidParameterError: Empty inputs, or activations of different numbers of examples.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a = {"l1": rng.normal(size=(50, 4))}
        >>> compare_models(a, {"m1": 2 * a["l1"]}).round(6).loc["l1", "m1"]
        np.float64(1.0)
    """
    a = {str(k): _flat(v) for k, v in acts_a.items()}
    b = {str(k): _flat(v) for k, v in acts_b.items()}
    if not a or not b:
        raise InvalidParameterError(f"compare_models needs layers on both sides; got {len(a)} and {len(b)}.")
    sizes = {x.shape[0] for x in (*a.values(), *b.values())}
    if len(sizes) != 1:
        raise InvalidParameterError(
            f"compare_models needs activations of the same probe set; got example counts {sorted(sizes)}."
        )
    return cast(pd.DataFrame, cka_matrix(a, b, debiased=debiased))  # mappings in, frame out


@register_analysis
class RSA(Analysis):
    """Representational similarity of each layer with a label model RDM or a reference layer.

    The model RDM of a probe-set column is 0 for two examples with the same value and 1
    otherwise (a categorical model, Kriegeskorte et al. 2008, Fig. 4). Each layer's RDM is
    correlated with it (Spearman by default) and tested by relabelling examples (Mantel 1967);
    p-values are corrected across layers.

    Args:
        target: Column for the model RDM (``"label"``, a group or metadata column).
        reference_layer: Compare with this captured layer's RDM instead of the target's.
        metric: Dissimilarity within a layer: ``"correlation"``, ``"euclidean"`` or ``"cosine"``.
            Correlation distance is undefined for constant rows (e.g. an all-zero ReLU
            output); such layers get a note and NaN.
        method: RDM correlation: ``"spearman"``, ``"kendall"`` or ``"pearson"``.
        n_permutations: Mantel permutations (0 disables the test).
        max_examples: Larger probe sets are subsampled (seeded) to this many examples (at least
            4; ``None``: every example), since the test costs ``n^2 * n_permutations``.
        p_adjust: Correction across layers (:data:`neuronmap.stats.PVALUE_METHODS`).
        alpha: Significance level for the ``significant`` column.
        layers: Optional selectors restricting the analysis to some captured layers.

    Raises:
        InvalidParameterError: Unknown ``metric``, ``method`` or ``p_adjust``, or bad counts.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.0"], analyses=[RSA(n_permutations=99)],
        ...                        reporters=[])
        >>> 0 < monitor.run(tiny_mlp(), step=0).metrics["neuronmap/rsa/net.0/rsa_p"] <= 1
        True
    """

    name = "rsa"
    probe_columns = ("target",)
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "target": [str],
        "reference_layer": [None, str],
        "metric": [Options(_METRICS)],
        "method": [Options(_METHODS)],
        "max_examples": [None, Interval(int, 4, None)],  # an RDM correlation needs a few pairs
    }

    def __init__(
        self,
        target: str = "label",
        *,
        reference_layer: str | None = None,
        metric: Metric = "correlation",
        method: Method = "spearman",
        n_permutations: int = 1000,
        max_examples: int | None = 500,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
    ) -> None:
        super().__init__(layers=layers)
        self.target = target
        self.reference_layer = reference_layer
        self.metric = metric
        self.method = method
        self.n_permutations = n_permutations
        self.max_examples = max_examples
        self.p_adjust = p_adjust
        self.alpha = alpha

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        rng = np.random.default_rng([ctx.random_state, 2])
        keep = np.arange(len(ctx.probe))
        notes: list[str] = []
        if self.reference_layer is None:
            labels = ctx.probe.column(self.target)
            keep = keep[~pd.isna(labels)]
        if self.max_examples is not None and len(keep) > self.max_examples:
            keep = np.sort(rng.choice(keep, self.max_examples, replace=False))
            notes.append(f"RDMs use a seeded random subset of {self.max_examples} of {len(ctx.probe)} examples.")
        reference, what = self._reference(ctx, keep)
        if np.ptp(reference) == 0:
            return AnalysisResult(self.name, status="skipped",
                                  notes=(f"The {what} RDM is constant (a single class?); RSA is undefined.",))
        items = self.layer_items(ctx)
        if not items:
            return AnalysisResult(self.name, status="skipped", notes=("No captured layer matches `layers`.",))
        rows = []
        for layer, acts in items:
            row: dict[str, Any] = {"layer": layer, "rsa": np.nan, "p": np.nan, "n_permutations": 0,
                                   "p_resolution": np.nan, "note": ""}
            if layer == self.reference_layer:
                row["note"] = "reference layer"
            else:
                try:
                    layer_rdm = rdm(_flat(acts)[keep], self.metric)
                    res = rsa(layer_rdm, reference, method=self.method, n_permutations=self.n_permutations,
                              random_state=rng)
                    row |= {"rsa": res.statistic, "p": res.pvalue, "n_permutations": res.n_permutations,
                            "p_resolution": 1.0 / (res.n_permutations + 1) if res.n_permutations else np.nan}
                except InvalidParameterError as err:
                    row["note"] = str(err)
                    notes.append(f"{layer}: {err}")
            rows.append(row)
        table = pd.DataFrame(rows, columns=["layer", "rsa", "p", "n_permutations", "p_resolution", "note"])
        table["p_adj"] = adjust_pvalues(table["p"].to_numpy(dtype=float), method=self.p_adjust, alpha=self.alpha)
        note = resolution_note(self.n_permutations, int(table["p"].notna().sum()), alpha=self.alpha, what="layers")
        if note:
            notes.append(note)
        table["significant"] = table["p_adj"] < self.alpha
        metrics = MetricSet()
        for r in table.to_dict(orient="records"):
            if np.isfinite(r["rsa"]):
                tested = np.isfinite(r["p"])
                metrics.add(r["layer"], "rsa", r["rsa"], p=r["p"] if tested else None,
                            p_adj=r["p_adj"] if tested else None)
        figure = _rsa_figure(table, title=f"RSA ({self.method}) with the {what} RDM")
        return AnalysisResult(self.name, metrics=metrics, tables={"rsa": table}, figures={"rsa": figure},
                              notes=tuple(notes))

    def _reference(self, ctx: AnalysisContext, keep: NDArray[np.intp]) -> tuple[NDArray[np.float64], str]:
        if self.reference_layer is not None:
            if self.reference_layer not in ctx.activations.layers:
                raise LayerNotFoundError(
                    f"reference_layer {self.reference_layer!r} was not captured; captured layers: "
                    f"{ctx.activations.layers}."
                )
            return rdm(_flat(ctx.activations[self.reference_layer])[keep], self.metric), \
                f"layer {self.reference_layer!r}"
        codes, _ = pd.factorize(pd.Series(ctx.probe.column(self.target)[keep]))
        # categorical model RDM: Hamming distance of one code per example is 0 (same) or 1 (different)
        return np.asarray(pdist(codes.reshape(-1, 1).astype(np.float64), "hamming")), f"{self.target!r}"


def _rsa_figure(table: pd.DataFrame, *, title: str) -> Figure:
    fig = Figure(figsize=(max(4.0, 0.5 * len(table) + 2.5), 3.0))
    ax = fig.subplots()
    x = np.arange(len(table))
    significant = table["significant"].to_numpy(dtype=bool)
    ax.bar(x, table["rsa"].fillna(0.0), color=np.where(significant, "#1f5fa8", "#9db4d0"))
    for i in np.flatnonzero(significant):
        ax.text(float(i), float(table["rsa"].iloc[i]), "*", ha="center", va="bottom")
    ax.axhline(0, color="#555", lw=0.8)
    ax.set_xticks(x, table["layer"], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("RDM correlation")
    ax.set_title(title + " (* corrected p < alpha)", fontsize=9)
    fig.tight_layout()
    return fig
