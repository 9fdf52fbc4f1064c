"""Attribution: which input tokens (or pixels, or features) drive the model's output, over training.

Text is attributed at the word-embedding layer (the embeddings are substituted by a forward
hook, see :mod:`neuronmap.analyses._input_space`) and summed over the embedding dimension to
one score per token; images are attributed at the pixels and summed over channels; tabular
inputs per feature. The numerics are :mod:`neuronmap.metrics.attribution`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import pandas as pd
import scipy.stats
import torch
from matplotlib.figure import Figure

from neuronmap._progress import progress
from neuronmap.analyses._input_space import InputBatch, InputSpace, token_labels
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval, Options, Type
from neuronmap.errors import ProbeSetError
from neuronmap.metrics.attribution import (
    IntegrationMethod,
    input_x_gradient,
    integrated_gradients,
    occlusion,
    saliency,
)
from neuronmap.probe import ProbeSet
from neuronmap.stats import bootstrap_ci

__all__ = ["Attribution", "AttributionMethod"]

AttributionMethod = Literal["saliency", "input_x_gradient", "integrated_gradients", "occlusion"]
_METHODS: tuple[str, ...] = get_args(AttributionMethod)


@dataclass
class _Collected:
    """Per-example results of one run."""

    maps: list[np.ndarray] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)
    classes: list[Any] = field(default_factory=list)
    deltas: list[np.ndarray] = field(default_factory=list)
    shown: list[np.ndarray] = field(default_factory=list)


@register_analysis
class Attribution(Analysis):
    """Input attributions per example, the top-attributed tokens per class, and their stability.

    Metrics (layer = the word-embedding module for text, ``input`` otherwise):

    * ``stability``: mean over examples of the Spearman rank correlation between each
      example's token attributions in this run and in the previous run (from the second run
      on), with a bootstrap CI over examples. Falling stability means the model changed what it
      relies on (cf. Adebayo et al. 2018, "Sanity Checks for Saliency Maps", Sec. 3, who use the
      same rank correlation to compare maps).
    * ``completeness_delta`` and ``completeness_delta_max`` (integrated gradients only): mean
      and largest ``|sum_i attr_i - (F(x) - F(x'))|`` over examples (Sundararajan et al. 2017,
      Prop. 1); large values call for more ``n_steps``.

    Tables: ``top_tokens`` (text) or ``top_features`` (tabular): per class, the ``top_k`` token
    ids (with the word from the ``text`` column where it aligns) of highest mean attribution.
    Figures: ``top_tokens`` / ``top_features`` bars and ``examples`` (token heatmap or pixel maps).

    Args:
        method: ``saliency``, ``input_x_gradient``, ``integrated_gradients`` or ``occlusion``.
        target: Output to explain: ``"predicted"`` (the argmax class), ``"label"`` (the probe
            label, integer classes) or a fixed class index. Models with one score per example
            ignore it.
        n_steps: Integrated-gradients quadrature nodes.
        integration: Integrated-gradients rule (``gausslegendre`` or ``riemann_*``).
        baseline: Reference value for integrated gradients and occlusion (zero embeddings or
            black pixels by default).
        internal_batch_size: Rows per forward pass inside integrated gradients and occlusion
            (bounds memory whatever ``n_steps``).
        occlusion_window: Window over one example's axes; default one token (``(1, d)``), an
            eighth of an image side, or one feature.
        top_k: Tokens per class in the table.
        max_examples: Attribute only the first examples of the probe set (``None``: all).
            Integrated gradients costs ``n_steps`` forward and backward passes per example, so
            the default 32 (was all) keeps a MiniLM-sized model on 160 sentences near the 10 s
            budget; the aggregates' CIs widen about ``sqrt(n / 32)``-fold (docs/performance.md).
        n_resamples: Bootstrap resamples for the CIs.
        confidence: Coverage of the CIs.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> attr = Attribution("input_x_gradient")
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.0"], analyses=[attr], reporters=[])
        >>> report = monitor.run(tiny_mlp(), step=0)
        >>> sorted(report.results["attribution"].tables)
        ['top_features']
    """

    needs_model = True  # takes gradients through the model
    name = "attribution"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "method": [Options(_METHODS)],
        "target": [Options(["predicted", "label"]), Type(int, label="a class index (int)")],
        "n_steps": [Interval(int, 1, None)],
        "integration": [Options(get_args(IntegrationMethod))],
        "baseline": [Interval(float, None, None)],
        "internal_batch_size": [Interval(int, 1, None)],
        "occlusion_window": [None, Type(list, tuple, label="a list of window sizes, one per input axis")],
    }

    def __init__(
        self,
        method: AttributionMethod = "integrated_gradients",
        *,
        target: int | Literal["predicted", "label"] = "predicted",
        n_steps: int = 32,
        integration: IntegrationMethod = "gausslegendre",
        baseline: float = 0.0,
        internal_batch_size: int = 64,
        occlusion_window: Sequence[int] | None = None,
        top_k: int = 10,
        max_examples: int | None = 32,
        n_resamples: int = 1000,
        confidence: float = 0.95,
    ) -> None:
        super().__init__()
        self.method = method
        self.target = target
        self.n_steps = n_steps
        self.integration = integration
        self.baseline = float(baseline)
        self.internal_batch_size = internal_batch_size
        self.occlusion_window = (
            None if occlusion_window is None else [int(w) for w in occlusion_window]
        )
        self.top_k = top_k
        self.max_examples = max_examples
        self.n_resamples = n_resamples
        self.confidence = confidence
        self._previous: list[np.ndarray] | None = None
        self._previous_step: int | None = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The last run's per-example attributions (kept to measure stability at the next run)."""
        if self._previous is None:
            return {}
        return {"step": self._previous_step, "attributions": [a.tolist() for a in self._previous]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("attributions") is not None:
            self._previous = [np.asarray(a, dtype=np.float64) for a in state["attributions"]]
            self._previous_step = state.get("step")

    # ------------------------------------------------------------------ run
    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        probe = (
            ctx.probe
            if self.max_examples is None
            else ctx.probe.subset(slice(0, self.max_examples))
        )
        ctx.model.eval()
        space = InputSpace(ctx.model, probe)
        found = self._collect(space, probe, ctx)
        metrics = MetricSet()
        notes: list[str] = []
        flat = [m.reshape(-1) for m in found.maps]
        if found.deltas:
            d = np.concatenate(found.deltas)
            metrics.add(space.layer, "completeness_delta", float(d.mean()), ci=self._ci(d, ctx))
            metrics.add(space.layer, "completeness_delta_max", float(d.max()))
        stability = self._stability(flat)
        if stability is None:
            notes.append(
                "stability: no previous run with the same examples to compare with (first run)."
            )
        elif len(stability) == 0:
            notes.append(
                "stability: every example's attributions were constant in one of the runs; not defined."
            )
        else:
            metrics.add(
                space.layer, "stability", float(stability.mean()), ci=self._ci(stability, ctx)
            )
        self._previous, self._previous_step = flat, ctx.step

        tables, figures = self._tables_and_figures(space, probe, found)
        return AnalysisResult(
            self.name, metrics=metrics, tables=tables, figures=figures, notes=tuple(notes)
        )

    def _collect(self, space: InputSpace, probe: ProbeSet, ctx: AnalysisContext) -> _Collected:
        """Attribute every probe batch; keep one map per example (real tokens only for text)."""
        found = _Collected()
        batches = space.batches(ctx.batch_size, ctx.device)
        total = -(-len(probe) // ctx.batch_size)
        for batch in progress(batches, desc=f"attribution ({self.method})", total=total, unit="batch"):
            targets = self._targets(space, batch, probe)
            attr, delta = self._attribute(space, batch, targets)
            if delta is not None:
                found.deltas.append(delta.abs().double().cpu().numpy())
            per_position = _per_position(attr, space.kind).double().cpu().numpy()
            if batch.mask is not None and batch.ids is not None:
                keep, ids = batch.mask.bool().cpu().numpy(), batch.ids.cpu().numpy()
                found.maps.extend(row[k] for row, k in zip(per_position, keep, strict=True))
                found.ids.extend(row[k] for row, k in zip(ids, keep, strict=True))
            elif per_position.ndim == 3:  # pixel maps [H, W]
                found.maps.extend(per_position)
                room = max(0, 6 - len(found.shown))
                found.shown.extend(batch.inputs[:room].float().cpu().numpy())
            else:
                found.maps.extend(per_position)
            found.classes.extend(
                ["score"] * len(attr) if targets is None else targets.cpu().tolist()
            )
        return found

    def _tables_and_figures(
        self, space: InputSpace, probe: ProbeSet, found: _Collected
    ) -> tuple[dict[str, pd.DataFrame], dict[str, Figure]]:
        maps, classes = found.maps, found.classes
        if space.kind == "embeddings":
            words = token_labels(probe.texts, found.ids)
            table = _top_table(maps, found.ids, words, classes, self.top_k, key="token_id")
            heatmap = _token_heatmap(maps[:8], words[:8], self.method)
            return {"top_tokens": table}, {
                "top_tokens": _bars(table, self.method),
                "examples": heatmap,
            }
        if maps and maps[0].ndim == 1:
            features = [np.arange(len(m)) for m in maps]
            names = [[f"x{j}" for j in f] for f in features]
            table = _top_table(maps, features, names, classes, self.top_k, key="feature")
            return {"top_features": table}, {"top_features": _bars(table, self.method)}
        return {}, {"examples": _pixel_maps(found.shown, maps[: len(found.shown)], self.method)}

    def _ci(self, values: np.ndarray, ctx: AnalysisContext) -> Any:
        if len(values) < 2:
            return None
        return bootstrap_ci(
            np.mean, values, n_resamples=self.n_resamples, confidence=self.confidence, random_state=ctx.random_state
        )

    def _targets(
        self, space: InputSpace, batch: InputBatch, probe: ProbeSet
    ) -> torch.Tensor | None:
        with torch.no_grad():
            logits = space.logits(batch.inputs, *batch.extras)
        if logits.ndim == 1 or logits.shape[1] == 1:
            return None
        n = len(logits)
        if self.target == "predicted":
            return logits.argmax(dim=1)
        if self.target == "label":
            labels = probe.labels
            if labels is None:
                raise ProbeSetError(
                    f"Attribution(target='label') needs probe labels; probe set {probe.name!r} has none."
                )
            chunk = labels[batch.start : batch.start + n]
            try:
                return torch.as_tensor(np.array(chunk, dtype=np.int64), device=logits.device)
            except (TypeError, ValueError) as err:
                raise ProbeSetError(
                    f"Attribution(target='label') needs integer class labels; got {chunk[:3].tolist()}. "
                    "Use target='predicted' or a class index."
                ) from err
        return torch.full((n,), int(self.target), dtype=torch.long, device=logits.device)

    def _attribute(
        self, space: InputSpace, batch: InputBatch, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        common: dict[str, Any] = {"target": targets, "additional_args": batch.extras}
        if self.method == "saliency":
            return saliency(space.logits, batch.inputs, **common), None
        if self.method == "input_x_gradient":
            return input_x_gradient(space.logits, batch.inputs, **common), None
        if self.method == "integrated_gradients":
            res = integrated_gradients(
                space.logits,
                batch.inputs,
                baselines=self.baseline,
                n_steps=self.n_steps,
                method=self.integration,
                internal_batch_size=self.internal_batch_size,
                **common,
            )
            return res.attributions, res.delta
        window = self.occlusion_window or _default_window(tuple(batch.inputs.shape[1:]), space.kind)
        attr = occlusion(
            space.logits,
            batch.inputs,
            window=window,
            baselines=self.baseline,
            internal_batch_size=self.internal_batch_size,
            **common,
        )
        return attr, None

    def _stability(self, current: list[np.ndarray]) -> np.ndarray | None:
        previous = self._previous
        if previous is None or len(previous) != len(current):
            return None
        rhos = []
        for now, before in zip(current, previous, strict=True):
            if now.shape != before.shape or now.size < 2 or np.ptp(now) == 0 or np.ptp(before) == 0:
                continue
            rhos.append(scipy.stats.spearmanr(now, before).statistic)
        return np.asarray(rhos, dtype=np.float64)


def _per_position(attr: torch.Tensor, kind: str) -> torch.Tensor:
    """One score per token (sum over the embedding), per pixel (sum over channels) or per feature."""
    if kind == "embeddings" or attr.ndim == 4:
        return attr.sum(dim=-1 if kind == "embeddings" else 1)
    return attr.reshape(len(attr), -1)


def _default_window(shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "embeddings":
        return (1, shape[-1])
    if len(shape) == 3:
        side = max(1, min(shape[1:]) // 8)
        return (shape[0], side, side)
    return (1,) * len(shape)


def _top_table(
    maps: list[np.ndarray],
    keys: list[np.ndarray],
    names: list[list[str]],
    classes: list[Any],
    top_k: int,
    *,
    key: str,
) -> pd.DataFrame:
    sums: dict[tuple[Any, int], float] = defaultdict(float)
    counts: Counter[tuple[Any, int]] = Counter()
    spelled: dict[int, Counter[str]] = defaultdict(Counter)
    for values, row_keys, row_names, cls in zip(maps, keys, names, classes, strict=True):
        for value, k, word in zip(values.reshape(-1), row_keys, row_names, strict=True):
            sums[(cls, int(k))] += float(value)
            counts[(cls, int(k))] += 1
            spelled[int(k)][word] += 1
    rows = [
        {
            "class": cls,
            key: k,
            "token": spelled[k].most_common(1)[0][0],
            "mean_attribution": s / counts[(cls, k)],
            "count": counts[(cls, k)],
        }
        for (cls, k), s in sums.items()
    ]
    columns = ["class", "rank", key, "token", "mean_attribution", "count"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows).sort_values(
        ["class", "mean_attribution"], ascending=[True, False], kind="stable"
    )
    frame = frame.groupby("class", sort=True).head(top_k).copy()
    frame["rank"] = frame.groupby("class").cumcount() + 1
    return frame[columns].reset_index(drop=True)


def _bars(table: pd.DataFrame, method: str) -> Figure:
    groups = list(table.groupby("class", sort=True))[:4] or [("none", table)]
    fig = Figure(
        figsize=(3.2 * len(groups), 0.25 * max(4, table["rank"].max() if len(table) else 4) + 1.2),
        layout="constrained",
    )
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
    for ax, (cls, part) in zip(axes, groups, strict=True):
        part = part.iloc[::-1]
        ax.barh(range(len(part)), part["mean_attribution"], color="#3b6ea5")
        ax.set_yticks(range(len(part)), part["token"].astype(str), fontsize=7)
        ax.set_title(f"class {cls}", fontsize=8)
        ax.set_xlabel("mean attribution", fontsize=7)
    fig.suptitle(f"Top-attributed inputs per class ({method})", fontsize=9)
    return fig


def _token_heatmap(maps: list[np.ndarray], words: list[list[str]], method: str) -> Figure:
    width = max((len(m) for m in maps), default=1)
    grid = np.full((max(len(maps), 1), width), np.nan)
    for i, m in enumerate(maps):
        grid[i, : len(m)] = m
    bound = (float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0) or 1.0
    fig = Figure(figsize=(min(16, 2 + 0.7 * width), 0.45 * len(grid) + 1.2), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for i, row in enumerate(words):
        for j, word in enumerate(row):
            ax.text(j, i, word[:8], ha="center", va="center", fontsize=6)
    ax.set_xlabel("token position")
    ax.set_ylabel("example")
    fig.colorbar(image, ax=ax, fraction=0.03, label="attribution")
    ax.set_title(f"Token attributions ({method})", fontsize=9)
    return fig


def _pixel_maps(images: list[np.ndarray], maps: list[np.ndarray], method: str) -> Figure:
    count = max(len(maps), 1)
    fig = Figure(figsize=(2.0 * count, 4.2), layout="constrained")
    axes = fig.subplots(2, count, squeeze=False)
    for j, (image, amap) in enumerate(zip(images, maps, strict=True)):
        shown = image.transpose(1, 2, 0) if image.shape[0] == 3 else image.mean(0)
        shown = (shown - shown.min()) / (np.ptp(shown) or 1.0)
        axes[0, j].imshow(shown, cmap=None if image.shape[0] == 3 else "gray")
        bound = float(np.abs(amap).max()) or 1.0
        axes[1, j].imshow(amap, cmap="RdBu_r", vmin=-bound, vmax=bound)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"Pixel attributions ({method}): input (top), attribution (bottom)", fontsize=9)
    return fig
