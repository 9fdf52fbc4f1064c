"""Representation-level bias: how much each layer encodes a sensitive attribute.

For every monitored layer and sensitive attribute, :class:`RepresentationBias` reports

* **decodability**: the cross-validated accuracy of a linear probe predicting the attribute
  from the activations (a ridge classifier on standardised activations, stratified k-fold),
  beside the majority-class baseline, with a Wilson (1927) score interval on the effective
  number of examples (the count divided by the cross-validation *design effect*, measured as
  the variance of the permuted CV accuracies over the binomial variance; Kish 1965) and a
  permutation p-value (labels permuted within test folds, Ojala & Garriga 2010, test 1;
  Phipson & Smyth 2010; the statistic is the ridge probe's cross-validated accuracy with ties
  broken by its mean held-out margin, since tied integer counts made the test conservative),
  corrected across layers x attributes. Each layer draws its own permutations. A plain Wilson interval treats
  the out-of-fold predictions as independent and missed chance accuracy on 12 % of noise
  layers at a nominal 95 % (Bengio & Grandvalet 2004). Accuracy well above the baseline means a
  downstream head *can* use the attribute (Elazar & Goldberg 2018).
* **centroid distance**: the largest Euclidean distance between two group centroids, divided
  by the pooled within-group root-mean-square spread ``sqrt(mean_g tr(Cov_g))`` so it is
  scale free, with a permutation p-value (group labels shuffled).
* **WEAT / SEAT** effect sizes when the probe set tags target and attribute sets in a
  metadata column (default ``"weat"``; values ``target_x``, ``target_y``, ``attr_a``,
  ``attr_b``). On the layer's (pooled) activations ``w``, with cosine similarity ``cos``::

      s(w, A, B) = mean_{a in A} cos(w, a) - mean_{b in B} cos(w, b)
      d = (mean_{x in X} s(x, A, B) - mean_{y in Y} s(y, A, B)) / std_{w in X u Y} s(w, A, B)

  (Caliskan, Bryson & Narayanan 2017, Science 356, p. 183, "WEAT"; the standard deviation
  uses ``ddof=1`` as May et al.'s reference code). The one-sided p-value is the fraction of
  equal-size re-partitions of ``X u Y`` whose statistic
  ``S = sum_x s(x, A, B) - sum_y s(y, A, B)`` is at least the observed one. On sentence
  embeddings this is SEAT (May et al. 2019, NAACL, "On Measuring Social Biases in Sentence
  Encoders").

References:
    Elazar & Goldberg (2018). Adversarial Removal of Demographic Attributes from Text Data. EMNLP.
    Wilson (1927). Probable inference, the law of succession, and statistical inference. JASA 22.
    Kish (1965). Survey Sampling. Wiley, sec. 8.2.
    Bengio & Grandvalet (2004). No Unbiased Estimator of the Variance of K-Fold
    Cross-Validation. JMLR 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from numpy.typing import NDArray

from neuronmap._progress import progress
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Columns, Constraint, Interval
from neuronmap.errors import InvalidParameterError, ProbeSetError
from neuronmap.findings import Finding
from neuronmap.metrics.bias import centroid_distance_test, weat_effect_size, weat_test
from neuronmap.metrics.probing import (
    prepare_folds,
    ridge_cv_statistic,
    stratified_folds,
    within_fold_permutations,
)
from neuronmap.stats import adjust_pvalues, wilson_interval

__all__ = ["RepresentationBias", "weat_effect_size", "weat_test"]


@dataclass
class _Row:
    layer: str
    attribute: str
    values: dict[str, float] = field(default_factory=dict)


class _TagPair(Constraint):
    """Two WEAT tags (strings)."""

    def __call__(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(t, str) for t in value)

    def __str__(self) -> str:
        return "two tag strings"


@register_analysis
class RepresentationBias(Analysis):
    """Decodability of sensitive attributes, group-centroid distances and WEAT/SEAT per layer.

    Args:
        sensitive: Probe-set group column(s) whose decodability and centroid distance to report.
        targets: The two target tags ``(X, Y)`` of the WEAT column.
        attributes: The two attribute tags ``(A, B)`` of the WEAT column.
        weat_column: Metadata column holding the tags (rows with other values are ignored);
            ``None`` or a missing column skips WEAT (with a note).
        cv: Stratified folds of the decodability probe.
        n_permutations: Permutations for every p-value.
        min_group_size: Groups with fewer examples are left out (named in the notes).
        max_components: Wider layers are projected onto this many principal components first.
        confidence: Coverage of the Wilson intervals.
        p_adjust: Correction across layers (x attributes), any of ``PVALUE_METHODS``.
        alpha: Significance level of the ``significant`` column.
        layers: Optional selectors restricting the analysis to some captured layers.

    Metrics (per layer): ``<attr>_decodability`` (CI, ``_p``, ``_p_adj``),
    ``<attr>_majority_baseline``, ``<attr>_centroid_distance`` (``_p``, ``_p_adj``),
    ``weat_effect_size`` (``_p``, ``_p_adj``). Figure: ``decodability``.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> monitor = nm.NeuronMap(tiny_probe(n=60), layers=["net.0"], reporters=[],
        ...                        analyses=[RepresentationBias("group", n_permutations=99)])
        >>> m = monitor.run(tiny_mlp(), step=0).metrics
        >>> 0 <= m["neuronmap/representation_bias/net.0/group_decodability"] <= 1
        True
    """

    name = "representation_bias"
    probe_columns = ("sensitive",)
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "sensitive": [Columns()],
        "targets": [_TagPair()],
        "attributes": [_TagPair()],
        "weat_column": [None, str],
        "n_permutations": [Interval(int, 1, None)],
        "min_group_size": [Interval(int, 1, None)],
        "max_components": [Interval(int, 1, None)],
    }
    headline_metrics = ("*_decodability", "weat_effect_size")

    def findings(self, result: AnalysisResult) -> list[Finding]:
        """See :func:`neuronmap.analyses._findings.representation_bias_findings`."""
        from neuronmap.analyses._findings import representation_bias_findings

        return representation_bias_findings(result, alpha=float(getattr(self, "alpha", 0.05)))

    def __init__(
        self,
        sensitive: str | Sequence[str],
        *,
        targets: tuple[str, str] = ("target_x", "target_y"),
        attributes: tuple[str, str] = ("attr_a", "attr_b"),
        weat_column: str | None = "weat",
        cv: int = 5,
        n_permutations: int = 999,
        min_group_size: int = 10,
        max_components: int = 64,
        confidence: float = 0.95,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
    ) -> None:
        super().__init__(layers=layers)
        self.sensitive = [sensitive] if isinstance(sensitive, str) else list(sensitive)
        self.targets, self.attributes = tuple(targets), tuple(attributes)
        self.weat_column = weat_column
        self.cv = cv
        self.n_permutations = n_permutations
        self.min_group_size = min_group_size
        self.max_components = max_components
        self.confidence = confidence
        self.p_adjust = p_adjust
        self.alpha = alpha

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        notes: list[str] = []
        encoded = {attr: self._encode(ctx, attr, notes) for attr in self.sensitive}
        weat_sets = self._weat_sets(ctx, notes)
        rng = np.random.default_rng([ctx.random_state, 11])
        rows: list[_Row] = []
        for layer, acts in progress(self.layer_items(ctx), desc="representation bias", unit="layer"):
            x = np.asarray(acts, dtype=np.float64).reshape(len(acts), -1)
            if not np.isfinite(x).all():
                notes.append(f"{layer}: activations contain NaN or Inf; layer skipped.")
                continue
            for attr, enc in encoded.items():
                if enc is not None:
                    rows.append(_Row(layer, attr, self._attribute_scores(x, *enc, ctx.random_state, rng)))
            if weat_sets is not None:
                effect, p = weat_test(*(x[idx] for idx in weat_sets), n_permutations=self.n_permutations,
                                      random_state=int(rng.integers(2**31)))
                rows.append(_Row(layer, "weat", {"weat_effect_size": effect, "weat_effect_size_p": p,
                                                 "p_resolution": 1.0 / (1 + self.n_permutations)}))
        table = self._table(rows)
        n_tests = int(table["decodability_p"].notna().sum()) if "decodability_p" in table else len(table)
        if rows and n_tests / (self.n_permutations + 1) > self.alpha:
            notes.append(
                f"p-value resolution: with n_permutations={self.n_permutations} no p-value is below "
                f"1/{self.n_permutations + 1} = {1 / (self.n_permutations + 1):.3g}, so after correcting over "
                f"{n_tests} tests none can fall below alpha={self.alpha}; raise n_permutations."
            )
        return AnalysisResult(
            self.name, metrics=_metrics(table), tables={"representation_bias": table},
            figures={"decodability": _figure(table, self.confidence)} if "decodability" in table else {},
            notes=tuple(notes), status="ok" if rows else "skipped",
        )  # fmt: skip

    # ------------------------------------------------------------------ inputs
    def _encode(
        self, ctx: AnalysisContext, attr: str, notes: list[str]
    ) -> tuple[NDArray[np.bool_], NDArray[np.int64]] | None:
        if "/" in attr:
            raise InvalidParameterError(
                f"RepresentationBias: sensitive must be column names without '/'; got {attr!r}."
            )
        values = pd.Series(ctx.probe.column(attr)).astype(str)
        sizes = values.value_counts()
        small = sizes[sizes < max(self.min_group_size, self.cv)]
        if len(small):
            notes.append(f"{attr}: left out groups with fewer than {max(self.min_group_size, self.cv)} "
                         f"examples (group: size): {small.to_dict()}.")  # fmt: skip
        keep = ~values.isin(small.index).to_numpy()
        if values[keep].nunique() < 2:
            notes.append(f"{attr}: fewer than 2 groups left; decodability and centroid distance skipped.")
            return None
        codes = pd.factorize(values[keep], sort=True)[0].astype(np.int64)
        return keep, codes

    def _weat_sets(self, ctx: AnalysisContext, notes: list[str]) -> list[NDArray[np.intp]] | None:
        if self.weat_column is None:
            return None
        if self.weat_column not in ctx.probe.frame:
            if (self.targets, self.attributes) != (("target_x", "target_y"), ("attr_a", "attr_b")):
                raise ProbeSetError(
                    f"WEAT tags {self.targets + self.attributes} need the column {self.weat_column!r}, "
                    f"which probe set {ctx.probe.name!r} lacks; it has {list(ctx.probe.frame.columns)}."
                )
            notes.append(f"No {self.weat_column!r} column in the probe set; WEAT skipped.")
            return None
        tags = ctx.probe.column(self.weat_column).astype(str)
        sets = [np.flatnonzero(tags == t) for t in (*self.targets, *self.attributes)]
        short = {t: len(s) for t, s in zip((*self.targets, *self.attributes), sets, strict=True) if len(s) < 2}
        if short:
            notes.append(f"WEAT skipped: tags of {self.weat_column!r} with fewer than 2 examples: {short}.")
            return None
        return sets

    # ------------------------------------------------------------------ statistics
    def _attribute_scores(
        self, x: NDArray[np.float64], keep: NDArray[np.bool_], y: NDArray[np.int64],
        seed: int, rng: np.random.Generator,
    ) -> dict[str, float]:  # fmt: skip
        x = x[keep]
        folds = stratified_folds(y, self.cv, random_state=seed)
        data = prepare_folds(x, folds, max_components=self.max_components, random_state=seed)
        # at least 200 relabellings for the design effect, whatever n_permutations is
        perms = within_fold_permutations(folds, len(y), max(self.n_permutations, 200), rng)
        # accuracy with ties broken by the held-out margin: integer counts tie often, which made
        # the p-value conservative (3.0 % rejections of a true null at alpha = 0.05)
        statistic = ridge_cv_statistic(data, y, np.vstack([np.arange(len(y)), perms]))
        counts = np.floor(statistic)
        null = counts[1:]
        mean = float(null.mean()) / len(y)
        binomial = mean * (1 - mean) / len(y)
        deff = max(1.0, float(np.var(null / len(y), ddof=1)) / binomial) if binomial > 0 else 1.0
        ci = wilson_interval(float(counts[0]), len(y), confidence=self.confidence, design_effect=deff)
        distance, distance_p = centroid_distance_test(x, y, self.n_permutations, rng)
        tested = statistic[1 : self.n_permutations + 1]
        return {
            "decodability": counts[0] / len(y), "decodability_ci_low": ci.low, "decodability_ci_high": ci.high,
            "decodability_p": (1 + np.count_nonzero(tested >= statistic[0])) / (1 + len(tested)),
            "design_effect": deff, "p_resolution": 1.0 / (1 + self.n_permutations),
            "majority_baseline": np.bincount(y).max() / len(y),
            "centroid_distance": distance, "centroid_distance_p": distance_p,
        }  # fmt: skip

    def _table(self, rows: list[_Row]) -> pd.DataFrame:
        table = pd.DataFrame([{"layer": r.layer, "attribute": r.attribute, **r.values} for r in rows])
        for stat in ("decodability", "centroid_distance", "weat_effect_size"):
            if f"{stat}_p" in table:
                table[f"{stat}_p_adj"] = adjust_pvalues(
                    table[f"{stat}_p"].to_numpy(float), method=self.p_adjust, alpha=self.alpha
                )
        if "decodability_p_adj" in table:
            table["decodability_significant"] = table["decodability_p_adj"] < self.alpha
        return table


def _metrics(table: pd.DataFrame) -> MetricSet:
    metrics = MetricSet()
    for row in table.to_dict(orient="records"):
        layer, attr = row["layer"], row["attribute"]
        if attr == "weat":
            metrics.add(layer, "weat_effect_size", row["weat_effect_size"], p=row["weat_effect_size_p"],
                        p_adj=row["weat_effect_size_p_adj"])
            continue
        metrics.add(layer, f"{attr}_decodability", row["decodability"],
                    ci=(row["decodability_ci_low"], row["decodability_ci_high"]),
                    p=row["decodability_p"], p_adj=row["decodability_p_adj"])
        metrics.add(layer, f"{attr}_majority_baseline", row["majority_baseline"])
        metrics.add(layer, f"{attr}_centroid_distance", row["centroid_distance"], p=row["centroid_distance_p"],
                    p_adj=row["centroid_distance_p_adj"])
    return metrics


def _figure(table: pd.DataFrame, confidence: float) -> Figure:
    """Decodability by layer per attribute, with Wilson bands and the majority baseline."""
    decodable = table[table["attribute"] != "weat"]
    layers = list(dict.fromkeys(decodable["layer"]))
    fig = Figure(figsize=(max(4.0, 0.5 * len(layers) + 2.5), 3.2))
    ax = fig.subplots()
    x = np.arange(len(layers))
    for attr, part in decodable.groupby("attribute", sort=False):
        part = part.set_index("layer").loc[layers]
        line = ax.plot(x, part["decodability"], marker="o", label=f"{attr} probe accuracy")[0]
        ax.fill_between(x, part["decodability_ci_low"], part["decodability_ci_high"], alpha=0.2,
                        color=line.get_color())
        ax.plot(x, part["majority_baseline"], ls=":", color=line.get_color(), label=f"{attr} majority baseline")
    ax.set_xticks(x, layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("cross-validated accuracy")
    ax.set_title(f"Decodability of sensitive attributes ({confidence:.0%} Wilson CI)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
