"""Counterfactual token-swap bias: does the prediction change when only the group terms change?

For a text probe set, :class:`CounterfactualBias` rewrites every sentence with its group terms
exchanged (``he`` <-> ``she``, ``Ebony`` <-> ``Alonzo`` ...; :func:`neuronmap.data.swaps.swap_terms`),
runs the model on the rewritten sentences and compares with its output on the originals
(counterfactual token fairness, Garg et al. 2019, sec. 3; the "counterfactual sentiment
bias" of Huang et al. 2020). Per swap list ("attribute") it reports, over the sentences that
a swap changed:

* **flip rate**: the fraction whose predicted label changes (Garg et al.'s counterfactual
  token fairness gap with a 0/1 loss), with a bootstrap CI;
* **mean |delta score|**: mean absolute change of the positive-class probability, with a
  bootstrap CI (Garg et al. 2019, eq. 2);
* **mean delta score**: its signed mean (positive: the counterfactual group gets higher
  scores), with a bootstrap CI and a paired sign-flip permutation p-value, corrected across
  attributes;

and a table of the examples with the largest changes.

References:
    Garg, Perot, Limtiaco, Taly, Chi & Beutel (2019). Counterfactual Fairness in Text
    Classification through Robustness. AIES.
    Huang et al. (2020). Reducing Sentiment Bias in Language Models via Counterfactual
    Evaluation. Findings of EMNLP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from numpy.typing import NDArray

from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.fairness import Predictions, predict_from_outputs
from neuronmap.analyses.params import Constraint, Interval, Type
from neuronmap.capture.forward import forward, model_device, output_logits, probe_batches
from neuronmap.data.swaps import BUILTIN_SWAPS, swap_terms
from neuronmap.errors import InvalidParameterError, ProbeSetError
from neuronmap.probe import ProbeSet
from neuronmap.stats import (
    adjust_pvalues,
    bootstrap_ci,
    permutation_test,
    resolution_note,
)

__all__ = ["CounterfactualBias"]

SwapList = Sequence[tuple[str, str]] | Mapping[str, str]
SwapSpec = str | SwapList | Sequence[str] | Mapping[str, "str | SwapList"]


def _is_pairs(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and all(
        isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(t, str) for t in p) for p in value
    )


def _builtin(name: str) -> SwapList:
    if name not in BUILTIN_SWAPS:
        raise InvalidParameterError(f"Unknown built-in swap list {name!r}; available: {sorted(BUILTIN_SWAPS)}.")
    return BUILTIN_SWAPS[name]


def resolve_swaps(swaps: SwapSpec) -> dict[str, SwapList]:
    """Normalise the ``swaps`` argument to ``{attribute: swap list}``.

    Accepted: a built-in name (``"gender"``, ``"race"``), a list of built-in names, a list
    of ``(a, b)`` pairs or a one-way ``{source: target}`` mapping (attribute ``"custom"``),
    or ``{attribute: built-in name | pairs | mapping}``.

    Raises:
        InvalidParameterError: Anything else, or an unknown built-in name.
    """
    if isinstance(swaps, str):
        return {swaps: _builtin(swaps)}
    if isinstance(swaps, Mapping) and swaps and all(isinstance(v, str) for v in swaps.values()):
        if all(v in BUILTIN_SWAPS for v in swaps.values()):  # {"sex": "gender"}: named built-in lists
            return {str(k): _builtin(str(v)) for k, v in swaps.items()}
        return {"custom": {str(k): str(v) for k, v in swaps.items()}}
    if isinstance(swaps, Mapping) and swaps:
        out: dict[str, SwapList] = {}
        for key, value in swaps.items():
            if isinstance(value, str):
                out[str(key)] = _builtin(value)
            elif _is_pairs(value) or (isinstance(value, Mapping) and value):
                out[str(key)] = value
            else:
                raise InvalidParameterError(
                    f"swaps[{key!r}] must be a built-in name, pairs or a mapping; got {value!r}."
                )
        return out
    if _is_pairs(swaps) and swaps:
        return {"custom": swaps}  # type: ignore[dict-item]
    if isinstance(swaps, Sequence) and swaps and all(isinstance(s, str) for s in swaps):
        return {str(s): _builtin(str(s)) for s in swaps}
    raise InvalidParameterError(
        f"swaps must be a built-in name {sorted(BUILTIN_SWAPS)}, a list of names, a list of (a, b) "
        f"pairs, a {{source: target}} mapping or {{attribute: swaps}}; got {swaps!r}."
    )


class _SwapSpec(Constraint):
    """What :func:`resolve_swaps` accepts."""

    def __call__(self, value: Any) -> bool:
        try:
            resolve_swaps(value)
        except InvalidParameterError:
            return False
        return True

    def __str__(self) -> str:
        return (f"a built-in name {sorted(BUILTIN_SWAPS)}, a list of names, a list of (a, b) pairs, "
                "a {source: target} mapping or {attribute: swaps}")


@register_analysis
class CounterfactualBias(Analysis):
    """Flip rate and score change when group terms in the probe texts are swapped.

    Args:
        swaps: What to swap (see :func:`resolve_swaps`); default the built-in gender list.
        tokenizer: The tokenizer that built the probe set (required; keyword-only, and a
            missing one raises :class:`~neuronmap.errors.InvalidParameterError`); the
            rewritten texts are encoded with it (and ``max_length``) exactly as
            :meth:`ProbeSet.from_texts` does.
        max_length: Truncation length, as used for the probe set.
        positive_label: Class whose probability is the score.
        predictions: As in :class:`~neuronmap.analyses.fairness.Fairness`.
        text_column: Probe-set column holding the texts.
        n_resamples: Bootstrap resamples (and sign-flip permutations) per statistic.
        confidence: Coverage of the intervals.
        top_k: Rows of the ``worst_examples`` table per attribute.
        p_adjust: Correction across attributes (any of ``PVALUE_METHODS``).
        alpha: Significance level of the ``significant`` column and the findings.

    Metrics (per attribute): ``flip_rate``, ``mean_abs_delta_score`` (with CIs),
    ``mean_delta_score`` (CI, ``_p``, ``_p_adj``), ``n_pairs``. Tables: ``summary``,
    ``worst_examples``. Figure: ``delta_scores``.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_bert, tiny_text_probe, tiny_tokenizer
        >>> analysis = CounterfactualBias("gender", tokenizer=tiny_tokenizer(), n_resamples=99)
        >>> monitor = nm.NeuronMap(tiny_text_probe(), layers=["bert.pooler"], analyses=[analysis],
        ...                        reporters=[])
        >>> m = monitor.run(tiny_bert(num_labels=2), step=0).metrics
        >>> 0 <= m["neuronmap/counterfactual_bias/gender/flip_rate"] <= 1
        True
    """

    needs_model = True  # runs the model on the swapped texts
    name = "counterfactual_bias"
    probe_columns = ("text_column",)
    needs_outputs = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "swaps": [_SwapSpec()],
        "tokenizer": [Type(callable, label="the probe set's tokenizer (a callable, passed as tokenizer=...)")],
        "max_length": [Interval(int, 1, None)],
        "positive_label": [Interval(int, 0, None), str],
        "predictions": [None, callable],
        "text_column": [str],
    }

    def __init__(
        self,
        swaps: SwapSpec = "gender",
        *,
        tokenizer: Any = None,
        max_length: int = 128,
        positive_label: int = 1,
        predictions: Predictions | None = None,
        text_column: str = "text",
        n_resamples: int = 1000,
        confidence: float = 0.95,
        top_k: int = 10,
        p_adjust: str = "holm",
        alpha: float = 0.05,
    ) -> None:
        super().__init__()
        self.swaps = swaps
        self._swaps = resolve_swaps(swaps)
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.positive_label = positive_label
        self._predictions = predictions
        self.text_column = text_column
        self.n_resamples = n_resamples
        self.confidence = confidence
        self.top_k = top_k
        self.p_adjust = p_adjust
        self.alpha = alpha

    def config(self) -> dict[str, Any]:
        return {**super().config(), "tokenizer": type(self._tokenizer).__name__,
                "predictions": None if self._predictions is None else repr(self._predictions)}  # fmt: skip

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        if self.text_column not in ctx.probe.frame:
            raise ProbeSetError(
                f"CounterfactualBias needs the texts in column {self.text_column!r}, which probe set "
                f"{ctx.probe.name!r} lacks; it has {list(ctx.probe.frame.columns)}. Build it with "
                "ProbeSet.from_texts or from_pandas."
            )
        texts = ctx.probe.frame[self.text_column].astype(str).tolist()
        labels, scores = self._predict(ctx.outputs)
        notes: list[str] = [] if scores is not None else ["predictions= returned no scores; delta scores are NaN."]
        rows: list[dict[str, Any]] = []
        examples: list[pd.DataFrame] = []
        deltas: dict[str, NDArray[np.float64]] = {}
        for offset, (attr, swap_list) in enumerate(self._swaps.items()):
            swapped = [swap_terms(t, swap_list) for t in texts]
            changed = np.array([i for i, (a, b) in enumerate(zip(texts, swapped, strict=True)) if a != b], dtype=int)
            if len(changed) == 0:
                notes.append(f"{attr}: no probe text contains a listed term; nothing to compare.")
                continue
            notes.append(f"{attr}: {len(changed)} of {len(texts)} texts contain a listed term.")
            cf_labels, cf_scores = self._predict(self._forward(ctx, [swapped[i] for i in changed]))
            flips = (cf_labels != labels[changed]).astype(np.float64)
            original = None if scores is None or cf_scores is None else scores[changed]
            delta = None if original is None or cf_scores is None else cf_scores - original
            seed = np.random.default_rng([ctx.random_state, offset, 5])
            rows.append(self._row(attr, flips, delta, original, seed))
            if delta is not None:
                deltas[attr] = delta
            examples.append(self._worst(attr, changed, texts, swapped, labels, cf_labels, scores, cf_scores))
        summary = pd.DataFrame(rows)
        if not summary.empty:
            summary["mean_delta_score_p_adj"] = adjust_pvalues(summary["mean_delta_score_p"].to_numpy(float),
                                                               method=self.p_adjust, alpha=self.alpha)  # fmt: skip
            summary["significant"] = summary["mean_delta_score_p_adj"] < self.alpha
            tested = summary["mean_delta_score_p_resolution"].dropna()
            note = resolution_note(self.n_resamples, len(tested), alpha=self.alpha, what="attributes",
                                   smallest=float(tested.max()) if len(tested) else None)
            if note:
                notes.append(note)
        worst = pd.concat(examples, ignore_index=True) if examples else pd.DataFrame()
        return AnalysisResult(
            self.name, metrics=_metrics(summary), tables={"summary": summary, "worst_examples": worst},
            figures={"delta_scores": _figure(deltas)} if deltas else {}, notes=tuple(notes),
            status="ok" if rows else "skipped",
        )  # fmt: skip

    def _predict(self, outputs: np.ndarray | None) -> tuple[NDArray[Any], NDArray[np.float64] | None]:
        return predict_from_outputs(outputs, positive_label=self.positive_label, predictions=self._predictions,
                                    owner="CounterfactualBias")  # fmt: skip

    def _forward(self, ctx: AnalysisContext, texts: list[str]) -> np.ndarray:
        """The model's output on ``texts``, encoded like the probe set, in eval mode without gradients."""
        probe = ProbeSet.from_texts(texts, self._tokenizer, max_length=self.max_length)
        device = ctx.device or model_device(ctx.model)
        chunks = []
        for batch in probe_batches(probe, ctx.batch_size, device, no_grad=True):
            out = forward(ctx.model, batch, positional=probe.positional)
            logits = output_logits(out, hidden_fallback=False)
            if logits is None:
                raise InvalidParameterError(
                    f"The model returned no tensor on the swapped texts (got {type(out).__name__})."
                )
            chunks.append(logits.detach().float().cpu())
        return torch.cat(chunks).numpy()

    def _row(
        self, attr: str, flips: NDArray[np.float64], delta: NDArray[np.float64] | None,
        original: NDArray[np.float64] | None, rng: np.random.Generator,
    ) -> dict[str, Any]:  # fmt: skip
        row: dict[str, Any] = {"attribute": attr, "n_pairs": len(flips)}
        stats: dict[str, NDArray[np.float64] | None] = {
            "flip_rate": flips, "mean_abs_delta_score": None if delta is None else np.abs(delta),
            "mean_delta_score": delta,
        }  # fmt: skip
        for name, values in stats.items():
            if values is None:
                row |= {name: np.nan, f"{name}_ci_low": np.nan, f"{name}_ci_high": np.nan}
                continue
            row[name] = float(values.mean())
            if len(values) >= 2:
                ci = bootstrap_ci(np.mean, values, n_resamples=self.n_resamples, confidence=self.confidence,
                                  random_state=rng)  # fmt: skip
                row |= {f"{name}_ci_low": ci.low, f"{name}_ci_high": ci.high}
            else:
                row |= {f"{name}_ci_low": np.nan, f"{name}_ci_high": np.nan}
        row["mean_delta_score_p"] = row["mean_delta_score_p_resolution"] = np.nan
        if delta is not None and original is not None and len(delta) >= 2 and np.any(delta != 0):
            test = permutation_test(
                _mean_difference, original + delta, original, permutation_type="samples",
                n_resamples=self.n_resamples, random_state=rng,
            )  # fmt: skip
            row["mean_delta_score_p"] = test.pvalue
            # scipy's two-sided p is twice the one-sided one, which is at least 1 / (N + 1) over N
            # random sign flips, or 1 / N when all 2^n flips are enumerated (exact test)
            exact = len(delta) < 63 and 2 ** len(delta) <= self.n_resamples
            row["mean_delta_score_p_resolution"] = 2.0 / (test.n_resamples + (0 if exact else 1))
        elif delta is not None:
            row["mean_delta_score_p"] = 1.0  # no pair changed its score: the observed mean is the null
        return row

    def _worst(
        self, attr: str, changed: NDArray[np.int64], texts: list[str], swapped: list[str], labels: NDArray[Any],
        cf_labels: NDArray[Any], scores: NDArray[np.float64] | None, cf_scores: NDArray[np.float64] | None,
    ) -> pd.DataFrame:  # fmt: skip
        frame = pd.DataFrame({
            "attribute": attr, "index": changed, "original": [texts[i] for i in changed],
            "counterfactual": [swapped[i] for i in changed], "label": labels[changed],
            "counterfactual_label": cf_labels,
            "score": np.nan if scores is None else scores[changed],
            "counterfactual_score": np.nan if cf_scores is None else cf_scores,
        })  # fmt: skip
        frame["delta_score"] = frame["counterfactual_score"] - frame["score"]
        frame["flipped"] = frame["label"] != frame["counterfactual_label"]
        order = np.lexsort((-frame["delta_score"].abs().fillna(0).to_numpy(), ~frame["flipped"].to_numpy()))
        return frame.iloc[order[: self.top_k]].reset_index(drop=True)


def _mean_difference(a: NDArray[np.float64], b: NDArray[np.float64], axis: int = -1) -> NDArray[np.float64]:
    return np.asarray(a.mean(axis=axis) - b.mean(axis=axis))


def _metrics(summary: pd.DataFrame) -> MetricSet:
    metrics = MetricSet()
    for row in summary.to_dict(orient="records"):
        attr = row["attribute"]
        metrics.add(attr, "n_pairs", row["n_pairs"])
        for name in ("flip_rate", "mean_abs_delta_score", "mean_delta_score"):
            tested = name == "mean_delta_score" and np.isfinite(row["mean_delta_score_p"])
            metrics.add(attr, name, row[name], ci=(row[f"{name}_ci_low"], row[f"{name}_ci_high"]),
                        p=row["mean_delta_score_p"] if tested else None,
                        p_adj=row["mean_delta_score_p_adj"] if tested else None)  # fmt: skip
    return metrics


def _figure(deltas: dict[str, NDArray[np.float64]]) -> Figure:
    """Histogram of the score change per swapped pair, one panel per attribute."""
    fig = Figure(figsize=(4.5 * len(deltas), 3.0))
    axes = fig.subplots(1, len(deltas), squeeze=False)[0]
    for ax, (attr, delta) in zip(axes, deltas.items(), strict=True):
        ax.hist(delta, bins=30, color="#1f5fa8")
        ax.axvline(0.0, color="#555", ls=":", lw=1)
        ax.set_xlabel("counterfactual - original score")
        ax.set_ylabel("pairs")
        ax.set_title(f"{attr}: {len(delta)} swapped pairs", fontsize=9)
    fig.tight_layout()
    return fig
