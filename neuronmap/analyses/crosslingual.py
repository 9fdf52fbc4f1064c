"""Cross-lingual alignment: do translations of one sentence land in the same place, layer by layer?

For a probe set of parallel sentences (a ``language`` column and a ``pair_id`` shared by the
translations of one sentence, e.g. :func:`neuronmap.presets.multilingual`),
:class:`CrossLingualAlignment` compares every language with a pivot language per layer:

* **linear CKA** between the pivot's and the language's representations of the same sentences
  (Kornblith et al. 2019; used across languages by Conneau et al. 2020, sec. 5), with a
  jackknife interval over sentences (Efron & Stein 1981; a bootstrap resample repeats
  sentences, which inflates CKA);
* **translation retrieval accuracy**: for each pivot sentence, is its nearest neighbour
  (cosine) among the other language's sentences its own translation? (the bitext retrieval of
  Artetxe & Schwenk 2019 and Pires et al. 2019, sec. 4.1). Wilson interval, and a permutation
  p-value against chance (the translations shuffled), corrected across layers and languages.
  ``center=True`` first subtracts each language's mean vector, which removes the
  language-identity offset that otherwise dominates nearest neighbours (Libovický et al. 2020).

Language decodability, the other side of the coin, is ``Probing(target="language")``.

References:
    Kornblith, Norouzi, Lee & Hinton (2019). Similarity of Neural Network Representations Revisited. ICML.
    Conneau, Wu, Li, Zettlemoyer & Stoyanov (2020). Emerging Cross-lingual Structure in
    Pretrained Language Models. ACL.
    Artetxe & Schwenk (2019). Massively Multilingual Sentence Embeddings for Zero-Shot
    Cross-Lingual Transfer and Beyond. TACL 7.
    Pires, Schlinger & Garrette (2019). How multilingual is Multilingual BERT? ACL.
    Efron & Stein (1981). The Jackknife Estimate of Variance. Ann. Statist. 9(3).
    Libovický, Rosa & Fraser (2020). On the Language Neutrality of Pre-trained Multilingual
    Representations. Findings of EMNLP.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.stats
from matplotlib.figure import Figure
from numpy.typing import NDArray

from neuronmap.analyses.adversarial import wilson_interval
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.errors import ProbeSetError
from neuronmap.metrics.similarity import linear_cka
from neuronmap.stats import adjust_pvalues

__all__ = ["CrossLingualAlignment"]


@register_analysis
class CrossLingualAlignment(Analysis):
    """Per layer and language: CKA with the pivot language and translation retrieval accuracy.

    Args:
        pivot: The language every other one is compared with.
        language_column: Column naming each sentence's language.
        pair_column: Column shared by the translations of one sentence.
        center: Subtract each language's mean vector before retrieval.
        n_permutations: Shuffles of the translations for the retrieval p-value (0 disables it).
        n_resamples: Unused, kept so one set of statistics settings fits every analysis (the CKA interval
            is a jackknife, the retrieval interval a Wilson interval); ``n_bootstrap`` is its deprecated name.
        confidence: Coverage.
        p_adjust: Correction across layers and languages. alpha: Significance level.
        layers, name: As for every analysis.

    Metrics (per layer): ``<lang>_cka`` (CI), ``<lang>_retrieval`` (CI, ``_p``, ``_p_adj``),
    ``mean_cka``, ``mean_retrieval``. Table ``alignment``; figure ``alignment``.

    Example:
        >>> import numpy as np, torch, neuronmap as nm
        >>> base = torch.randn(30, 8)
        >>> x = torch.cat([base, base + 0.1 * torch.randn(30, 8)])
        >>> probe = nm.ProbeSet(x, metadata={"language": ["en"] * 30 + ["de"] * 30, "pair_id": list(range(30)) * 2})
        >>> an = CrossLingualAlignment(n_permutations=99)
        >>> m = nm.NeuronMap(probe, layers=["0"], analyses=[an], reporters=[]).run(
        ...     torch.nn.Sequential(torch.nn.Linear(8, 8)), step=0).metrics
        >>> m["neuronmap/crosslingual/0/de_retrieval"] > 0.9
        True
    """

    name = "crosslingual"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "pivot": [str],
        "language_column": [str],
        "pair_column": [str],
        "center": [bool],
    }
    _renamed_parameters: ClassVar[dict[str, str]] = {"n_bootstrap": "n_resamples"}

    def __init__(
        self,
        pivot: str = "en",
        *,
        language_column: str = "language",
        pair_column: str = "pair_id",
        center: bool = True,
        n_permutations: int = 1000,
        n_resamples: int = 1000,
        confidence: float = 0.95,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        layers: str | list[str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(layers=layers, name=name)
        self.pivot = pivot
        self.language_column = language_column
        self.pair_column = pair_column
        self.center = center
        self.n_permutations = n_permutations
        self.n_resamples = n_resamples
        self.confidence = confidence
        self.p_adjust = p_adjust
        self.alpha = alpha

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        frame = ctx.probe.frame
        missing = [c for c in (self.language_column, self.pair_column) if c not in frame]
        if missing:
            raise ProbeSetError(f"CrossLingualAlignment needs columns {missing} in probe set {ctx.probe.name!r}; "
                                f"it has {list(frame.columns)}. See neuronmap.presets.multilingual().")  # fmt: skip
        lang = frame[self.language_column].astype(str).to_numpy()
        pair = frame[self.pair_column].astype(str).to_numpy()
        languages = [x for x in dict.fromkeys(lang) if x != self.pivot]
        if self.pivot not in set(lang) or not languages:
            return AnalysisResult(self.name, status="skipped", notes=(
                f"Pivot {self.pivot!r} and at least one other language are needed; languages: {sorted(set(lang))}.",))
        index = {(a, b): i for i, (a, b) in enumerate(zip(lang, pair, strict=True))}
        rows = []
        rng = np.random.default_rng([ctx.random_state, 21])
        for layer, acts in self.layer_items(ctx):
            x = np.asarray(acts, dtype=np.float64).reshape(len(acts), -1)
            for other in languages:
                shared = [p for p in dict.fromkeys(pair[lang == self.pivot]) if (other, p) in index]
                if len(shared) < 3:
                    continue
                a = x[[index[(self.pivot, p)] for p in shared]]
                b = x[[index[(other, p)] for p in shared]]
                rows.append(self._compare(layer, other, a, b, rng, ctx.random_state))
        if not rows:
            return AnalysisResult(self.name, status="skipped",
                                  notes=("No language shares 3+ sentences with the pivot.",))
        table = pd.DataFrame(rows)
        table["retrieval_p_adj"] = adjust_pvalues(table["retrieval_p"].to_numpy(float), method=self.p_adjust,
                                                  alpha=self.alpha)  # fmt: skip
        table["significant"] = table["retrieval_p_adj"] < self.alpha
        return AnalysisResult(self.name, metrics=_metrics(table), tables={"alignment": table},
                              figures={"alignment": _figure(table, self.pivot)})  # fmt: skip

    def _compare(self, layer: str, other: str, a: NDArray[np.float64], b: NDArray[np.float64],
                 rng: np.random.Generator, seed: int) -> dict[str, Any]:  # fmt: skip
        m = len(a)
        value = float(linear_cka(a, b))
        # A bootstrap resample repeats sentences, and repeated rows inflate CKA (its percentile
        # interval then misses the estimate); the jackknife leaves one sentence out instead
        # (Efron & Stein 1981), each replicate an (m-1) x (m-1) slice of the two Gram matrices.
        grams = (a @ a.T, b @ b.T)
        loo = _gram_cka(*grams, np.array([np.delete(np.arange(m), i) for i in range(m)]))
        se = float(np.sqrt((m - 1) / m * np.sum((loo - loo.mean()) ** 2)))
        z = float(scipy.stats.norm.ppf(0.5 + self.confidence / 2))
        cka = (value - z * se, value + z * se)
        if self.center:
            a, b = a - a.mean(axis=0), b - b.mean(axis=0)
        sim = _unit(a) @ _unit(b).T
        hits = int(np.count_nonzero(sim.argmax(axis=1) == np.arange(m)))
        low, high = wilson_interval(hits, m, self.confidence)
        p = np.nan
        if self.n_permutations:
            perms = rng.permuted(np.tile(np.arange(m), (self.n_permutations, 1)), axis=1)
            null = (sim.argmax(axis=1)[None, :] == perms).sum(axis=1)
            p = float((1 + np.count_nonzero(null >= hits)) / (1 + self.n_permutations))
        return {"layer": layer, "language": other, "n_pairs": m, "cka": value,
                "cka_ci_low": cka[0], "cka_ci_high": cka[1],
                "retrieval": hits / m, "retrieval_ci_low": low, "retrieval_ci_high": high, "chance": 1 / m,
                "retrieval_p": p}  # fmt: skip


def _gram_cka(k: NDArray[np.float64], g: NDArray[np.float64], idx: NDArray[np.int64]) -> NDArray[np.float64]:
    """Linear CKA of the row subsets ``idx`` (``[..., m]``) from the Gram matrices ``k`` and ``g``.

    ``CKA = <HKH, HGH>_F / (||HKH||_F ||HGH||_F)`` (Kornblith et al. 2019, eq. 4 with linear kernels).
    """
    flat = idx.reshape(-1, idx.shape[-1])
    out = np.empty(len(flat))
    for i, rows in enumerate(flat):
        kc, lc = _double_center(k[np.ix_(rows, rows)]), _double_center(g[np.ix_(rows, rows)])
        denom = np.sqrt((kc * kc).sum() * (lc * lc).sum())
        out[i] = (kc * lc).sum() / denom if denom > 0 else np.nan
    return out.reshape(idx.shape[:-1])


def _double_center(g: NDArray[np.float64]) -> NDArray[np.float64]:
    return g - g.mean(axis=0, keepdims=True) - g.mean(axis=1, keepdims=True) + g.mean()


def _unit(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _metrics(table: pd.DataFrame) -> MetricSet:
    m = MetricSet()
    for r in table.to_dict(orient="records"):
        lang = r["language"]
        ci = (r["cka_ci_low"], r["cka_ci_high"]) if np.isfinite(r["cka_ci_low"]) else None
        m.add(r["layer"], f"{lang}_cka", r["cka"], ci=ci)
        p = r["retrieval_p"] if np.isfinite(r["retrieval_p"]) else None
        m.add(r["layer"], f"{lang}_retrieval", r["retrieval"], ci=(r["retrieval_ci_low"], r["retrieval_ci_high"]),
              p=p, p_adj=r["retrieval_p_adj"] if p is not None else None)  # fmt: skip
    for layer, part in table.groupby("layer", sort=False):
        m.add(str(layer), "mean_cka", float(part["cka"].mean()))
        m.add(str(layer), "mean_retrieval", float(part["retrieval"].mean()))
    return m


def _figure(table: pd.DataFrame, pivot: str) -> Figure:
    layers = list(dict.fromkeys(table["layer"]))
    fig = Figure(figsize=(max(7.0, 0.7 * len(layers) + 5), 3.3))
    ax_r, ax_c = fig.subplots(1, 2)
    x = np.arange(len(layers))
    for lang, part in table.groupby("language", sort=False):
        part = part.set_index("layer").reindex(layers)
        line = ax_r.plot(x, part["retrieval"], marker="o", label=str(lang))[0]
        ax_r.fill_between(x, part["retrieval_ci_low"], part["retrieval_ci_high"], color=line.get_color(), alpha=0.15)
        ax_c.plot(x, part["cka"], marker="o", color=line.get_color(), label=str(lang))
    ax_r.axhline(float(table["chance"].max()), color="#555", ls=":", lw=1, label="chance")
    ax_r.set_ylim(0, 1.02)
    ax_r.set_ylabel(f"retrieval accuracy vs {pivot}")
    ax_c.set_ylabel(f"linear CKA with {pivot}")
    for ax in (ax_r, ax_c):
        ax.set_xticks(x, layers, rotation=60, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    ax_r.set_title("Translation retrieval (Wilson CI)", fontsize=9)
    ax_c.set_title("Cross-lingual CKA", fontsize=9)
    fig.tight_layout()
    return fig
