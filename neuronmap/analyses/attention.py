"""AttentionAnalysis: what every attention head looks at, and how much the task needs it.

Per attention module (the layer in metric keys) and head: the entropy of the attention
distribution, the attention mass parked on special tokens, the mean attention distance
(:mod:`neuronmap.metrics.attention`), and the importance of the head measured by ablating it
on the probe set (:mod:`neuronmap.capture.attention_hooks` documents how heads are found
and ablated).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch.nn import functional as F

from neuronmap._progress import progress
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval, Options, Type
from neuronmap.capture.attention_hooks import (
    AttentionModule,
    HeadAblation,
    ablation_mechanism,
    eager_attention,
    find_attention_modules,
)
from neuronmap.capture.forward import forward, output_logits, probe_batches
from neuronmap.capture.layers import match_selector
from neuronmap.errors import InvalidParameterError, NeuronMapError, ProbeSetError
from neuronmap.findings import Finding
from neuronmap.metrics.attention import (
    attention_entropy,
    mean_attention_distance,
    special_token_mask,
    special_token_mass,
)
from neuronmap.probe import ProbeSet
from neuronmap.stats import adjust_pvalues, bootstrap_ci, permutation_test

__all__ = ["AttentionAnalysis", "ImportanceMeasure"]

ImportanceMeasure = Literal["auto", "loss", "logit"]
_MEASURES: tuple[str, ...] = get_args(ImportanceMeasure)
_QUANTITIES = ("entropy", "normalized_entropy", "special_mass", "mean_distance")


@register_analysis
class AttentionAnalysis(Analysis):
    """Per-head attention entropy, special-token mass, mean distance and ablation importance.

    Metrics per attention module ``<layer>``: ``entropy`` (nats), ``normalized_entropy``
    (entropy / ln(valid keys)), ``special_mass`` and ``mean_distance`` averaged over heads, with
    bootstrap CIs over examples; per head ``head<h>_entropy``, ``head<h>_special_mass``,
    ``head<h>_mean_distance`` and ``head<h>_importance`` (with CI, sign-flip permutation p-value
    and its Holm correction across all heads).

    Importance is the mean over probe examples of the rise in cross-entropy loss when the head
    is ablated (``measure="loss"``), or of the drop in the logit of the class the intact model
    predicts (``measure="logit"``); either way positive means the head helps (Michel et al.
    2019, "Are Sixteen Heads Really Better than One?", Sec. 3). ``"auto"`` uses the loss when
    the probe set has integer labels and the model returns class logits.

    Tables: ``heads`` (one row per layer and head). Figures: layer x head heatmaps
    ``entropy``, ``special_mass``, ``mean_distance`` and ``importance``.

    Args:
        ablation: Measure head importance (one pass over the probe set per head).
        measure: ``auto``, ``loss`` or ``logit``.
        special_token_ids: Ids counted as special tokens; default the first and the last real
            token of each text (``[CLS]``/``[SEP]``, ``<s>``/``</s>``), the first token otherwise.
        switch_to_eager: Run a Hugging Face model loaded with SDPA/flash attention with eager
            attention for this analysis (restored afterwards); if ``False`` such a model raises.
        max_examples: Use only the first examples of the probe set.
        ablation_examples: Measure head importance on a seeded random subsample of this many
            probe examples (``None``: all). Each head costs one pass over the examples it is
            measured on, so this bounds the analysis' cost (every head is still measured): the
            default 32 keeps a 6-block, 12-head model on 160 sentences near 10 s on 2 CPU
            threads. The estimate stays unbiased for the probe-set mean; its CI widens about
            ``sqrt(n / 32)``-fold (docs/performance.md).
        n_resamples: Bootstrap resamples for CIs.
        confidence: Coverage of the CIs.
        n_permutations: Sign flips for the importance p-values.
        p_adjust: Multiple-comparison correction across heads (see ``neuronmap.stats``).
        alpha: Significance level of the corrected importance p-values (the findings; the
            two-stage FDR corrections also use it).
        per_head_metrics: Log per-head metrics (the table holds them either way).
        layers: Selectors restricting the analysis to some attention modules.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_bert, tiny_text_probe
        >>> monitor = nm.NeuronMap(tiny_text_probe(8), layers=["bert.encoder.layer.*"],
        ...                        analyses=[AttentionAnalysis(ablation=False)], reporters=[])
        >>> report = monitor.run(tiny_bert(num_labels=2), step=0)
        >>> sorted(report.results["attention"].figures)
        ['entropy', 'mean_distance', 'special_mass']
    """

    needs_model = True  # re-runs the model for attention maps and head ablations
    name = "attention"
    headline_metrics = ("normalized_entropy", "special_mass")
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "ablation": [bool],
        "measure": [Options(_MEASURES)],
        "special_token_ids": [None, Type(list, tuple, np.ndarray, label="a list of token ids")],
        "switch_to_eager": [bool],
        "ablation_examples": [None, Interval(int, 2, None)],
        "per_head_metrics": [bool],
    }

    def findings(self, result: AnalysisResult) -> list[Finding]:
        """See :func:`neuronmap.analyses._findings.attention_findings`."""
        from neuronmap.analyses._findings import attention_findings

        return attention_findings(result, alpha=float(getattr(self, "alpha", 0.05)))  # hooks may run on a bare instance

    def __init__(
        self,
        *,
        ablation: bool = True,
        measure: ImportanceMeasure = "auto",
        special_token_ids: Sequence[int] | None = None,
        switch_to_eager: bool = True,
        max_examples: int | None = None,
        ablation_examples: int | None = 32,
        n_resamples: int = 1000,
        confidence: float = 0.95,
        n_permutations: int = 999,
        p_adjust: str = "holm",
        alpha: float = 0.05,
        per_head_metrics: bool = True,
        layers: str | list[str] | None = None,
    ) -> None:
        super().__init__(layers=layers)
        self.ablation = ablation
        self.measure = measure
        self.special_token_ids = (
            None if special_token_ids is None else [int(t) for t in special_token_ids]
        )
        self.switch_to_eager = switch_to_eager
        self.max_examples = max_examples
        self.ablation_examples = ablation_examples
        self.n_resamples = n_resamples
        self.confidence = confidence
        self.n_permutations = n_permutations
        self.p_adjust = p_adjust
        self.alpha = alpha
        self.per_head_metrics = per_head_metrics

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        probe = (
            ctx.probe
            if self.max_examples is None
            else ctx.probe.subset(slice(0, self.max_examples))
        )
        model = ctx.model.eval()
        notes: list[str] = []
        with eager_attention(model, allowed=self.switch_to_eager) as switched:
            if switched:
                notes.append(switched)
            first = next(probe_batches(probe, ctx.batch_size, ctx.device))
            found = find_attention_modules(model, first, probe.positional)
            modules = self._select(found, model)
            stats, outputs = self._describe(model, probe, modules, ctx)
            importance: dict[tuple[int, int], np.ndarray] = {}
            if self.ablation:
                measure = self._measure(outputs, probe)
                sample = _subsample(len(probe), self.ablation_examples, ctx.random_state)
                sampled = probe if sample is None else probe.subset(sample)
                reference = outputs if sample is None else outputs[torch.from_numpy(sample)]
                base = _score(reference, sampled, measure, reference)
                heads = [(li, m, h) for li, m in enumerate(modules) for h in range(m.heads)]
                for li, module, head in progress(heads, desc="attention: head ablations", unit="head"):
                    # head_mask rows follow every attention module, not just the selected ones.
                    ablation = HeadAblation(model, found, found.index(module), head)
                    ablated = self._run_ablated(model, sampled, ablation, ctx)
                    importance[(li, head)] = _score(ablated, sampled, measure, reference) - base
                if sample is not None:
                    notes.append(
                        f"Head importance measured on {len(sample)} of {len(probe)} probe examples "
                        f"(seeded random subsample; ablation_examples={self.ablation_examples})."
                    )
                mechanisms = sorted({ablation_mechanism(model, m) for m in modules})
                notes.append(
                    f"Head importance: change in {measure} by ablating each head via "
                    f"{', '.join(mechanisms)}."
                )
        table = self._table(modules, stats, importance, ctx)
        metrics = self._metrics(modules, stats, table, ctx)
        figures = {
            q: _heatmap(table, q, modules)
            for q in ("entropy", "special_mass", "mean_distance", "importance")
            if q in table
        }
        return AnalysisResult(
            self.name, metrics=metrics, tables={"heads": table}, figures=figures, notes=tuple(notes)
        )

    # ------------------------------------------------------------------ steps
    def _select(
        self, modules: list[AttentionModule], model: torch.nn.Module
    ) -> list[AttentionModule]:
        if not modules:
            raise NeuronMapError(
                f"No attention probabilities found in {type(model).__name__}: AttentionAnalysis needs modules that "
                "return (output, probabilities [batch, heads, queries, keys]), as Hugging Face models do with "
                'attn_implementation="eager".'
            )
        if not self.layers:
            return modules
        by_name = {m.name: m.module for m in modules}
        names = {n for s in self.layers for n in match_selector(s, by_name, modules=by_name)}
        chosen = [m for m in modules if m.name in names]
        if not chosen:
            raise InvalidParameterError(
                f"The layers selectors {self.layers} match none of the attention modules {[m.name for m in modules]}."
            )
        return chosen

    def _describe(
        self,
        model: torch.nn.Module,
        probe: ProbeSet,
        modules: list[AttentionModule],
        ctx: AnalysisContext,
    ) -> tuple[dict[str, dict[str, np.ndarray]], torch.Tensor]:
        """Per module and quantity ``[n, heads]`` values, and the intact model's outputs."""
        parts: dict[str, dict[str, list[np.ndarray]]] = {
            m.name: {q: [] for q in _QUANTITIES} for m in modules
        }
        outputs: list[torch.Tensor] = []
        maps: dict[str, torch.Tensor] = {}
        handles = [m.module.register_forward_hook(_grab(maps, m)) for m in modules]
        try:
            for batch in probe_batches(probe, ctx.batch_size, ctx.device):
                with torch.no_grad():
                    outputs.append(_logits(forward(model, batch, positional=probe.positional, output_attentions=True)))
                mask = batch.get("attention_mask")
                for m in modules:
                    attn = maps.pop(m.name).float()
                    keys = (
                        torch.ones(attn.shape[0], attn.shape[-1], device=attn.device)
                        if mask is None
                        else mask
                    )
                    special = special_token_mask(
                        keys,
                        input_ids=batch.get("input_ids"),
                        special_token_ids=self.special_token_ids,
                        positions=("first", "last") if mask is not None else ("first",),
                    )
                    values = {
                        "entropy": attention_entropy(attn, attention_mask=keys),
                        "normalized_entropy": attention_entropy(
                            attn, attention_mask=keys, normalize=True
                        ),
                        "special_mass": special_token_mass(attn, special, attention_mask=keys),
                        "mean_distance": mean_attention_distance(attn, attention_mask=keys),
                    }
                    for q, v in values.items():
                        parts[m.name][q].append(v.double().cpu().numpy())
        finally:
            for handle in handles:
                handle.remove()
        stats = {name: {q: np.concatenate(v) for q, v in qs.items()} for name, qs in parts.items()}
        return stats, torch.cat([o.detach().float().cpu() for o in outputs])

    def _measure(self, outputs: torch.Tensor, probe: ProbeSet) -> Literal["loss", "logit"]:
        labels = probe.labels
        integer_labels = labels is not None and np.issubdtype(np.asarray(labels).dtype, np.integer)
        classes = outputs.ndim == 2 and outputs.shape[1] > 1
        if self.measure == "loss" and not (integer_labels and classes):
            raise ProbeSetError(
                "AttentionAnalysis(measure='loss') needs integer probe labels and a model returning class logits "
                f"[n, classes]; got labels={'none' if labels is None else np.asarray(labels).dtype} and outputs "
                f"of shape {tuple(outputs.shape)}. Use measure='logit'."
            )
        if self.measure == "auto":
            return "loss" if integer_labels and classes else "logit"
        return self.measure

    def _run_ablated(
        self, model: torch.nn.Module, probe: ProbeSet, ablation: HeadAblation, ctx: AnalysisContext
    ) -> torch.Tensor:
        outputs = []
        with ablation:
            for batch in probe_batches(probe, ctx.batch_size, ctx.device, no_grad=True):
                output = forward(model, batch, positional=probe.positional, output_attentions=True, **ablation.kwargs)
                outputs.append(_logits(output).float().cpu())
        return torch.cat(outputs)

    # ------------------------------------------------------------------ results
    def _table(
        self,
        modules: list[AttentionModule],
        stats: Mapping[str, Mapping[str, np.ndarray]],
        importance: Mapping[tuple[int, int], np.ndarray],
        ctx: AnalysisContext,
    ) -> pd.DataFrame:
        rows = []
        for li, m in enumerate(modules):
            for head in range(m.heads):
                row: dict[str, Any] = {"layer": m.name, "head": head}
                row.update({q: float(stats[m.name][q][:, head].mean()) for q in _QUANTITIES})
                if (li, head) in importance:
                    diffs = importance[(li, head)]
                    ci = bootstrap_ci(
                        np.mean, diffs, n_resamples=self.n_resamples, confidence=self.confidence,
                        random_state=ctx.random_state,
                    )
                    test = permutation_test(
                        _mean,
                        diffs,
                        permutation_type="samples",
                        n_resamples=self.n_permutations,
                        random_state=ctx.random_state,
                    )
                    row.update(
                        importance=ci.estimate,
                        importance_ci_low=ci.low,
                        importance_ci_high=ci.high,
                        importance_p=test.pvalue,
                    )
                rows.append(row)
        table = pd.DataFrame(rows)
        if "importance_p" in table:
            table["importance_p_adj"] = adjust_pvalues(
                table["importance_p"].to_numpy(), method=self.p_adjust, alpha=self.alpha
            )
        return table

    def _metrics(
        self,
        modules: list[AttentionModule],
        stats: Mapping[str, Mapping[str, np.ndarray]],
        table: pd.DataFrame,
        ctx: AnalysisContext,
    ) -> MetricSet:
        metrics = MetricSet()
        for m in modules:
            for q in _QUANTITIES:
                per_example = stats[m.name][q].mean(axis=1)
                ci = (
                    bootstrap_ci(
                        np.mean,
                        per_example,
                        n_resamples=self.n_resamples,
                        confidence=self.confidence,
                        random_state=ctx.random_state,
                    )
                    if len(per_example) > 1
                    else None
                )
                metrics.add(m.name, q, float(per_example.mean()), ci=ci)
        if not self.per_head_metrics:
            return metrics
        for row in table.itertuples(index=False):
            for q in ("entropy", "special_mass", "mean_distance"):
                metrics.add(row.layer, f"head{row.head}_{q}", getattr(row, q))
            if "importance" in table:
                metrics.add(
                    row.layer,
                    f"head{row.head}_importance",
                    row.importance,
                    ci=(row.importance_ci_low, row.importance_ci_high),
                    p=row.importance_p,
                    p_adj=row.importance_p_adj,
                )
        return metrics


def _subsample(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded random subsample of ``size`` of ``n`` examples (``None``: all)."""
    if size is None or size >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _grab(store: dict[str, torch.Tensor], module: AttentionModule) -> Any:
    def hook(mod: torch.nn.Module, args: Any, output: Any) -> None:
        store[module.name] = output[module.index].detach()

    return hook


def _logits(output: Any) -> torch.Tensor:
    logits = output_logits(output)
    if logits is None:
        raise NeuronMapError(
            f"The model output holds no tensor to measure head importance on; got {type(output).__name__}."
        )
    return logits.reshape(len(logits), -1) if logits.ndim > 2 else logits


def _score(
    outputs: torch.Tensor, probe: ProbeSet, measure: str, reference: torch.Tensor
) -> np.ndarray:
    """Per-example loss, or minus the logit of the class the intact model predicts (higher = worse)."""
    if measure == "loss":
        labels = torch.from_numpy(np.array(probe.labels, dtype=np.int64))
        return F.cross_entropy(outputs, labels, reduction="none").double().numpy()
    if outputs.ndim == 1 or outputs.shape[1] == 1:
        return -outputs.reshape(-1).double().numpy()
    predicted = reference.argmax(dim=1, keepdim=True)
    return -outputs.gather(1, predicted)[:, 0].double().numpy()


def _heatmap(table: pd.DataFrame, quantity: str, modules: list[AttentionModule]) -> Figure:
    heads = max(m.heads for m in modules)
    grid = np.full((len(modules), heads), np.nan)
    index = {m.name: i for i, m in enumerate(modules)}
    for row in table.itertuples(index=False):
        grid[index[row.layer], row.head] = getattr(row, quantity)
    fig = Figure(figsize=(3.5 + 0.45 * heads, 1.2 + 0.35 * len(modules)), layout="constrained")
    ax = fig.subplots()
    if quantity == "importance":
        # Centre the diverging map on zero: blue heads help the task, red ones hurt it.
        bound = (float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0) or 1.0
        image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
    else:
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_xticks(range(heads), [str(h) for h in range(heads)], fontsize=7)
    ax.set_yticks(range(len(modules)), [m.name for m in modules], fontsize=6)
    ax.set_xlabel("head")
    fig.colorbar(image, ax=ax, fraction=0.04)
    ax.set_title(f"Attention {quantity.replace('_', ' ')} by layer and head", fontsize=9)
    return fig
