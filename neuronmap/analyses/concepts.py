"""Unsupervised concepts of a layer (NMF / PCA / ICA) and concept algebra on labelled ones.

:class:`ConceptExtraction` factorises a layer's activations ``X ~ U W`` into a few
components (NMF as in Fel et al. 2023's CRAFT, or PCA / ICA), shows the probe examples
that activate each component most, and correlates every component with the labels and
the sensitive groups, with p-values corrected for the number of tests.

:class:`ConceptAlgebra` treats named concepts (probe-set tags or separate probe sets) as
vectors: their directions (centroid difference or CAV), the cosine similarity between
them, and vector arithmetic ``a - b + c`` answered by the nearest probe examples
(Mikolov et al. 2013).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import scipy.stats
from matplotlib.figure import Figure

from neuronmap.analyses._concept_sets import (
    ConceptsArg,
    ConceptSetAnalysis,
    capture_reduced,
    concept_activations,
    concept_specs,
    example_labels,
    probe_members,
)
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval, Options, Type
from neuronmap.errors import InvalidParameterError
from neuronmap.metrics.concepts import (
    analogy_query,
    centroid_direction,
    cosine_similarity_table,
    nearest_examples,
    train_cav,
)
from neuronmap.probe import ProbeSet
from neuronmap.stats import adjust_pvalues

__all__ = ["ConceptAlgebra", "ConceptExtraction"]

Method = Literal["nmf", "pca", "ica"]
_METHODS = ("nmf", "pca", "ica")
Direction = Literal["centroid", "cav"]
_DIRECTIONS = ("centroid", "cav")
_MAX_LEVELS = 10  # numeric columns with more distinct values are correlated as numbers


@register_analysis
class ConceptExtraction(Analysis):
    """Components of each layer's activations, their top examples and what they correlate with.

    ``nmf`` factorises activations shifted to be non-negative (each unit minus its minimum
    over the probe set; Fel et al. 2023 factorise post-ReLU activations, which already are),
    ``pca`` and ``ica`` the centred activations. PCA and ICA components are signed so that
    their long tail is positive, which makes "top-activating examples" meaningful.

    Args:
        method: ``"nmf"``, ``"pca"`` or ``"ica"`` (scikit-learn's NMF, PCA, FastICA).
        n_components: Components per layer (capped by the number of examples and units).
        top_k: Top-activating examples listed per component.
        p_adjust: Multiple-comparison correction of the correlation p-values
            (:data:`neuronmap.stats.PVALUE_METHODS`; formerly ``correction``, which still works
            and warns).
        alpha: Significance level of the findings (corrected p below it) and of the two-stage
            FDR corrections.
        layers: Optional selectors restricting the analysis to some captured layers.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> extraction = ConceptExtraction("pca", n_components=3)
        >>> monitor = nm.NeuronMap(tiny_probe(), layers="net.1", analyses=[extraction], reporters=[])
        >>> report = monitor.run(tiny_mlp(), step=0)
        >>> 0 < report.metrics["neuronmap/concept_extraction/net.1/explained_variance"] <= 1
        True
    """

    name = "concept_extraction"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "method": [Options(_METHODS)],
        "n_components": [Interval(int, 1, None)],
    }
    _renamed_parameters: ClassVar[dict[str, str]] = {"correction": "p_adjust"}

    def __init__(
        self,
        method: Method = "nmf",
        *,
        n_components: int = 6,
        top_k: int = 5,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
    ) -> None:
        super().__init__(layers=layers)
        self.method = method
        self.n_components = n_components
        self.top_k = top_k
        self.p_adjust = p_adjust
        self.alpha = alpha

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        metrics = MetricSet()
        tops, corrs, explained = [], [], {}
        for layer, acts in self.layer_items(ctx):
            x = acts.reshape(len(acts), -1).astype(np.float64)
            scores, explained[layer] = self._factorise(x, ctx.random_state)
            for k in range(scores.shape[1]):
                order = np.argsort(-scores[:, k], kind="stable")[: self.top_k]
                extra = example_labels(ctx.probe, order)
                tops += [{"layer": layer, "component": k, "rank": r, "example": int(i), "score": float(scores[i, k]),
                          **{c: v[r] for c, v in extra.items()}} for r, i in enumerate(order)]
            corrs += [{"layer": layer, **row} for row in _correlations(scores, ctx.probe)]
            metrics.add(layer, "explained_variance", explained[layer])
        corr = pd.DataFrame(corrs, columns=["layer", "component", "variable", "level", "r", "p"])
        corr["p_adj"] = adjust_pvalues(corr["p"].to_numpy(dtype=float), method=self.p_adjust,
                                    alpha=self.alpha)
        for (layer, variable), sub in corr.groupby(["layer", "variable"], sort=False):
            best = sub.loc[sub["r"].abs().idxmax()] if sub["r"].notna().any() else None
            if best is not None:
                metrics.add(layer, f"{variable}_correlation", abs(best["r"]), p=best["p"], p_adj=best["p_adj"])
        return AnalysisResult(
            self.name, metrics=metrics,
            tables={"top_examples": pd.DataFrame(tops), "correlations": corr},
            figures={"correlations": _correlation_figure(corr, self.method)} if len(corr) else {},
        )

    def _factorise(self, x: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
        from sklearn.decomposition import NMF, PCA, FastICA

        k = max(1, min(self.n_components, x.shape[0] - 1, x.shape[1]))
        if self.method == "nmf":
            shifted = x - x.min(axis=0)
            model = NMF(n_components=k, init="nndsvda", max_iter=1000, random_state=seed)
            scores = model.fit_transform(shifted)
            return scores, _r2(shifted, scores @ model.components_)
        if self.method == "pca":
            pca = PCA(n_components=k, random_state=seed)
            scores = pca.fit_transform(x)
            return _orient(scores), float(pca.explained_variance_ratio_.sum())
        ica = FastICA(n_components=k, whiten="unit-variance", max_iter=1000, random_state=seed)
        scores = ica.fit_transform(x)
        return _orient(scores), _r2(x, ica.inverse_transform(scores))


def _r2(x: np.ndarray, approx: np.ndarray) -> float:
    """Share of the total variance the reconstruction explains, ``1 - SS_res / SS_tot``."""
    total = float(((x - x.mean(axis=0)) ** 2).sum())
    return 1.0 - float(((x - approx) ** 2).sum()) / total if total > 0 else float("nan")


def _orient(scores: np.ndarray) -> np.ndarray:
    skew = scipy.stats.skew(scores, axis=0)
    return scores * np.where(np.nan_to_num(skew) < 0, -1.0, 1.0)


def _correlations(scores: np.ndarray, probe: ProbeSet) -> list[dict[str, Any]]:
    """Pearson correlation of each component with each label/group level (point-biserial
    for a 0/1 indicator, Tate 1954) or with a numeric column itself."""
    columns: list[tuple[str, np.ndarray]] = []
    if probe.labels is not None:
        columns.append(("label", probe.labels))
    columns += [(g, probe.column(g)) for g in probe.group_columns]
    rows = []
    for variable, values in columns:
        values = np.asarray(values)
        numeric = values.dtype.kind in "iuf" and len(np.unique(values)) > _MAX_LEVELS
        distinct = np.unique(values.astype(str) if values.dtype.kind == "O" else values)
        levels = [(None, values.astype(float))] if numeric else [
            (lvl, (values == lvl).astype(float)) for lvl in distinct
        ]
        if not numeric and len(levels) == 2:
            levels = levels[1:]  # the other level is its complement: same |r|, same p
        for level, y in levels:
            for k in range(scores.shape[1]):
                if np.ptp(y) == 0 or np.ptp(scores[:, k]) == 0:
                    r, p = float("nan"), float("nan")
                else:
                    res = scipy.stats.pearsonr(scores[:, k], y)
                    r, p = float(res.statistic), float(res.pvalue)
                rows.append({"component": k, "variable": str(variable), "level": None if level is None else str(level),
                             "r": r, "p": p})
    return rows


def _correlation_figure(corr: pd.DataFrame, method: str) -> Figure:
    layers = list(dict.fromkeys(corr["layer"]))[:6]
    fig = Figure(figsize=(3.2 * len(layers) + 0.6, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers), squeeze=False)[0])
    image = None
    for ax, layer in zip(axes, layers, strict=False):
        sub = corr[corr["layer"] == layer].copy()
        sub["column"] = sub["variable"] + np.where(sub["level"].isna(), "", "=" + sub["level"].astype(str))
        grid = sub.pivot(index="component", columns="column", values="r")
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(grid.shape[0]), [f"{method}{c}" for c in grid.index], fontsize=6)
        ax.set_title(layer, fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="Pearson r", shrink=0.8)
    fig.suptitle(f"{method.upper()} components vs labels and groups", fontsize=8)
    return fig


@register_analysis
class ConceptAlgebra(ConceptSetAnalysis):
    """Concept directions, their cosine similarities, and analogies ``a - b + c``.

    Args:
        concepts: Concept names mapped to a probe tag column (``"royal"``),
            ``"column=value"``, probe indices, or a separate probe set; or a list of columns.
        expressions: Analogies ``(a, b, c)`` or ``(a, b, c, expected)``: the query
            ``mean(a) - mean(b) + mean(c)`` is answered by the ``top_k`` probe examples
            nearest in cosine (examples of ``a``, ``b`` and ``c`` excluded, as in Mikolov et
            al. 2013); with ``expected`` (a probe-tagged concept) the hit rate is reported.
        direction: ``"centroid"`` (concept mean minus probe mean) or ``"cav"`` (CAV against
            the untagged probe examples) for the similarity table.
        top_k: Nearest examples per analogy.
        layers: Optional selectors restricting the analysis to some captured layers.

    Example:
        >>> import numpy as np, torch
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp
        >>> x = torch.randn(40, 8)
        >>> tags = {"a": np.arange(40) < 10, "b": np.arange(40) >= 30}
        >>> algebra = ConceptAlgebra(["a", "b"])
        >>> report = nm.NeuronMap(nm.ProbeSet(x, metadata=tags), layers="net.1", analyses=[algebra],
        ...                       reporters=[]).run(tiny_mlp(), step=0)
        >>> list(report.results["concept_algebra"].tables)
        ['similarity']
    """

    needs_model = True  # captures separate concept probe sets
    name = "concept_algebra"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "expressions": [Type(list, tuple, label="a list of (a, b, c) or (a, b, c, expected) tuples")],
        "direction": [Options(_DIRECTIONS)],
    }

    def __init__(
        self,
        concepts: ConceptsArg,
        *,
        expressions: Sequence[Sequence[str]] = (),
        direction: Direction = "centroid",
        top_k: int = 5,
        layers: str | list[str] | None = None,
    ) -> None:
        super().__init__(layers=layers)
        self._specs = concept_specs(concepts, "ConceptAlgebra")
        self._expressions = [list(e) for e in expressions]
        for expr in self._expressions:
            unknown = [c for c in expr if c not in self._specs]
            if len(expr) not in (3, 4) or unknown:
                raise InvalidParameterError(
                    f"ConceptAlgebra: expressions must be (a, b, c) or (a, b, c, expected) over the given concepts "
                    f"{list(self._specs)}; got {expr!r}" + (f" (unknown: {unknown})." if unknown else ".")
                )
        self.concepts = concepts
        self.expressions = expressions
        self.direction = direction
        self.top_k = top_k

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        probe = ctx.probe
        items = self.layer_items(ctx)
        acts = {layer: a.reshape(len(a), -1) for layer, a in items}
        reduce = ctx.activations.reduce if ctx.activations.reduce != "none" else "mean"

        def capture(concept_probe: ProbeSet) -> dict[str, np.ndarray]:
            return capture_reduced(ctx.model, concept_probe, list(acts), reduce=reduce,
                                   batch_size=ctx.batch_size, device=ctx.device)

        concept_acts = {n: concept_activations(s, n, probe=probe, probe_acts=acts, capture=capture)
                        for n, s in self._specs.items()}
        members = {n: probe_members(probe, s, n) for n, s in self._specs.items()}
        metrics, sim_rows, ana_rows, notes = MetricSet(), [], [], []
        for layer, x in acts.items():
            directions = {n: self._direction(c[layer], x, members[n], ctx.random_state)
                          for n, c in concept_acts.items()}
            sim = cosine_similarity_table(directions)
            sim_rows += [{"layer": layer, "concept_a": a, "concept_b": b, "cosine": float(sim.loc[a, b])}
                         for a in sim.index for b in sim.columns]
            for expr in self._expressions:
                a, b, c = expr[:3]
                query = analogy_query(*(concept_acts[n][layer].mean(axis=0) for n in (a, b, c)))
                excluded = [member for n in (a, b, c) if (member := members[n]) is not None]
                exclude = np.concatenate(excluded or [np.array([], int)])
                idx, cos = nearest_examples(x, query, k=self.top_k, exclude=exclude)
                expected = members[expr[3]] if len(expr) == 4 else None
                hits = np.isin(idx, expected) if expected is not None else np.full(len(idx), np.nan)
                label = f"{a} - {b} + {c}"
                extra = example_labels(probe, idx)
                ana_rows += [{"layer": layer, "expression": label, "rank": r, "example": int(i), "cosine": float(cs),
                              "expected": expr[3] if len(expr) == 4 else None, "hit": hits[r],
                              **{k: v[r] for k, v in extra.items()}}
                             for r, (i, cs) in enumerate(zip(idx, cos, strict=True))]
                if expected is not None:
                    metrics.add(layer, f"analogy_{a}_minus_{b}_plus_{c}_hit_rate", float(np.mean(hits)))
                elif len(expr) == 4:
                    notes.append(f"Expected concept {expr[3]!r} is a separate probe set; no hit rate for {label}.")
        return AnalysisResult(self.name, metrics=metrics,
                              tables={"similarity": pd.DataFrame(sim_rows),
                                      **({"analogies": pd.DataFrame(ana_rows)} if ana_rows else {})},
                              figures={"similarity": _similarity_figure(pd.DataFrame(sim_rows))},
                              notes=tuple(dict.fromkeys(notes)))

    def _direction(
        self, concept: np.ndarray, probe_acts: np.ndarray, members: np.ndarray | None, seed: int
    ) -> np.ndarray:
        if self.direction == "centroid":
            return centroid_direction(concept, probe_acts)
        rest = np.ones(len(probe_acts), dtype=bool)
        if members is not None:
            rest[members] = False
        return train_cav(concept, probe_acts[rest], random_state=seed).direction


def _similarity_figure(sim: pd.DataFrame) -> Figure:
    layers = list(dict.fromkeys(sim["layer"]))[:6]
    fig = Figure(figsize=(2.8 * len(layers) + 0.8, 2.8), layout="constrained")
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    image = None
    for ax, layer in zip(axes, layers, strict=False):
        grid = sim[sim["layer"] == layer].pivot(index="concept_a", columns="concept_b", values="cosine")
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=6)
        ax.set_title(layer, fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="cosine", shrink=0.8)
    fig.suptitle("Concept directions: cosine similarity", fontsize=8)
    return fig
