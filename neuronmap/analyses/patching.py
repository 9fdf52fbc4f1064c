"""ActivationPatching: which components (and positions) carry the difference between two prompts.

For each clean/corrupted pair of the probe set, a component's activation from one run is
copied into the other and the change of the logit difference is measured (Wang et al.
2022; Zhang & Nanda 2024). ``direction="denoising"`` copies clean activations into the
corrupted run (is the component *sufficient* to restore the answer?); ``"noising"``
copies corrupted activations into the clean run (is it *necessary*?). Effects are
normalised so that 0 is "no change" and 1 is "the whole clean-corrupted gap".

Attribution patching (Nanda 2023; Syed et al. 2023) estimates every patch at once from one
forward and one backward pass; its Pearson and Spearman agreement with the exact patches
is reported, so one can judge whether the cheap estimate is good enough for a model.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from neuronmap._progress import progress
from neuronmap.analyses._figures import heatmap_figure, short_labels
from neuronmap.analyses._pairs import (
    Answers,
    PairBatch,
    PairedNodeAnalysis,
    PairsArg,
    logit_diff,
    normalized_effect_ci,
)
from neuronmap.analyses._replay import BlockReplay, per_copy, tile
from neuronmap.analyses.base import (
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Options
from neuronmap.capture.interventions import Edit, Node, intervene, record
from neuronmap.errors import InvalidParameterError
from neuronmap.metrics.patching import (
    attribution_patching_effect,
    normalized_effect,
    rank_agreement,
)

__all__ = ["ActivationPatching"]

Direction = Literal["denoising", "noising"]
#: Patched runs stacked into one forward hold up to this many times ``batch_size`` sequences.
_STACK = 4
_DIRECTIONS = ("denoising", "noising")


@register_analysis
class ActivationPatching(PairedNodeAnalysis):
    """Exact and attribution patching of module outputs, heads and positions on prompt pairs.

    Args:
        pairs: Probe column holding each clean row's corrupted partner index (negative on
            other rows), or a list of ``(clean, corrupted)`` index pairs.
        layers: Selectors of modules whose whole output is patched (blocks, MLPs).
        heads: Selectors of attention output projections whose input is split into heads
            (``**.attention.output.dense`` in BERT, ``**.attn.c_proj`` in GPT-2).
        n_heads: Heads per projection (default: ``model.config.num_attention_heads``).
        per_position: Also patch each token position separately (the layer x position
            heatmap): ``"layers"`` (default) for the ``layers=`` nodes only, ``True`` for head
            nodes too (the default before issue 17: one pass per head and position, 12x more
            passes for the 72 heads of MiniLM), ``False`` for none.
        direction: ``"denoising"`` (clean into corrupted, default) or ``"noising"``.
        answers: ``"label"`` (the probe labels of the two prompts are the answers) or
            ``"prediction"`` (the model's clean and corrupted predictions).
        max_pairs: Patch at most this many pairs, a seeded random subset (``None``: every pair).
            The cost is linear in the pairs; the default 32 (new in issue 17; before, every pair)
            keeps 6 blocks + 72 heads of MiniLM with per-block positions near 20 capture passes
            of 160 sentences. On that bench (74 pairs) the node effects of 32 pairs rank like
            those of all 74 (see docs/performance.md); CIs are about sqrt(74/32) = 1.5x wider.
        attribution: Also compute attribution patching and its agreement.
        n_resamples: Bootstrap resamples (over pairs) of each effect's CI.
        confidence: Coverage of those CIs.

    Example:
        >>> import torch, numpy as np
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp
        >>> x = torch.randn(8, 8)
        >>> x[1::2] = -x[0::2]  # each odd row is the corrupted partner of the row before
        >>> probe = nm.ProbeSet(x, labels=[1, 0] * 4, metadata={"partner": [1, -1, 3, -1, 5, -1, 7, -1]})
        >>> patching = ActivationPatching(pairs="partner", layers="net.*", per_position=False)
        >>> report = nm.NeuronMap(probe, layers="net.0", analyses=[patching], reporters=[]).run(tiny_mlp(), step=0)
        >>> sorted(report.results["activation_patching"].tables)
        ['effects']
    """

    name = "activation_patching"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "per_position": [bool, Options(["layers"])],
        "direction": [Options(_DIRECTIONS)],
        "attribution": [bool],
    }

    def __init__(
        self,
        *,
        pairs: PairsArg = "corrupted_index",
        layers: str | list[str] | None = None,
        heads: str | list[str] | None = None,
        n_heads: int | None = None,
        per_position: bool | Literal["layers"] = "layers",
        direction: Direction = "denoising",
        answers: Answers = "label",
        max_pairs: int | None = 32,
        attribution: bool = True,
        n_resamples: int = 1000,
        confidence: float = 0.95,
    ) -> None:
        super().__init__(pairs=pairs, layers=layers, heads=heads, n_heads=n_heads, answers=answers,
                         n_resamples=n_resamples, confidence=confidence, nodes_role="to patch",
                         max_pairs=max_pairs)
        self.per_position = per_position
        self.direction = direction
        self.attribution = attribution

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        model = ctx.model
        nodes, batches, notes = self.prepare(ctx)
        if not batches:
            return AnalysisResult(self.name, status="skipped", notes=(*notes, "No pair with distinct answers."))
        was_training = model.training
        model.eval()
        try:
            acc = _Accumulator(nodes)
            for batch in batches:
                self._patch_batch(model, batch, nodes, acc, positional=ctx.probe.positional,
                                  batch_size=ctx.batch_size)
        finally:
            model.train(was_training)
        return self._result(acc, ctx.random_state, notes)

    def _patch_batch(
        self, model: Any, batch: PairBatch, nodes: list[Node], acc: _Accumulator, *, positional: bool,
        batch_size: int,
    ) -> None:
        if self.direction == "denoising":
            source, target = batch.clean, batch.corrupted
        else:
            source, target = batch.corrupted, batch.clean
        with torch.no_grad(), record(model, nodes) as seen:
            ld_source = logit_diff(model, source, batch, positional=positional)
        src = dict(seen)
        leaves: dict[Node, tuple[torch.Tensor, torch.Tensor]] = {}

        def tap(node: Node) -> Any:
            def edit(act: torch.Tensor) -> torch.Tensor:
                leaf = torch.zeros_like(act, requires_grad=self.attribution)
                leaves[node] = (act.detach(), leaf)
                return act + leaf if self.attribution else act

            return edit

        # The target run is also the reference whose early blocks every patched run replays.
        replay = BlockReplay(model, nodes)
        with (torch.set_grad_enabled(self.attribution), replay.recording(),
              intervene(model, {n: tap(n) for n in nodes})):
            ld_target = logit_diff(model, target, batch, positional=positional)
            grads = (torch.autograd.grad(ld_target.sum(), [leaves[n][1] for n in nodes], allow_unused=True)
                     if self.attribution else [None] * len(nodes))
        acc.add_baselines(ld_source, ld_target)
        with torch.no_grad():
            for node, grad in zip(nodes, grads, strict=True):
                if src[node].shape != leaves[node][0].shape:
                    raise InvalidParameterError(
                        f"Node {node.name!r} has shape {tuple(src[node].shape)} in one prompt and "
                        f"{tuple(leaves[node][0].shape)} in the other; patched pairs must be token-aligned."
                    )
                if grad is not None:
                    delta = src[node] - leaves[node][0]
                    approx = attribution_patching_effect(delta, grad, sum_dims=delta.ndim - 1)
                    acc.add(node, "approx", ld_target + approx)
                    if self._positions(node) and delta.ndim == 3:
                        pos_approx = attribution_patching_effect(delta, grad, sum_dims=1)
                        acc.add(node, "pos_approx", ld_target[:, None] + pos_approx)
            # Several patched runs go through the model as one stacked forward (up to `stack` copies
            # of the batch): the heads of one projection, or the positions of one node.
            stack = max(1, _STACK * batch_size // len(batch))
            groups: dict[str, list[Node]] = {}
            for node in nodes:
                groups.setdefault(node.module, []).append(node)
            for group in progress(list(groups.values()), desc="activation patching: modules", unit="module"):
                for start in range(0, len(group), stack):
                    chunk = group[start : start + stack]
                    edits = [{n: _constant(src[n])} for n in chunk]
                    for node, ld in zip(chunk, _stacked_logit_diff(model, target, batch, replay, edits,
                                                                    positional=positional), strict=True):
                        acc.add(node, "exact", ld)
                for node in group:
                    if self._positions(node) and src[node].ndim == 3:
                        width = src[node].shape[1]
                        lds = [ld for start in range(0, width, stack) for ld in _stacked_logit_diff(
                            model, target, batch, replay,
                            [{node: _at_position(src[node], p)} for p in range(start, min(start + stack, width))],
                            positional=positional)]
                        acc.add(node, "pos_exact", torch.stack(lds, dim=1))

    def _positions(self, node: Node) -> bool:
        return self.per_position is True or (self.per_position == "layers" and node.head is None)

    def _result(self, acc: _Accumulator, seed: int, notes: list[str]) -> AnalysisResult:
        src, tgt = acc.baseline("source"), acc.baseline("target")
        metrics, rows, pos_rows = MetricSet(), [], []
        for node in acc.nodes:
            exact = acc.get(node, "exact")
            ci = normalized_effect_ci(exact, src, tgt, n_resamples=self.n_resamples, seed=seed,
                                      confidence=self.confidence)
            row: dict[str, Any] = {"node": node.name, "module": node.module, "head": node.head, "effect": ci[0],
                   "ci_low": ci[1], "ci_high": ci[2], "attribution": float("nan")}
            metrics.add(node.name, "patch_effect", ci[0], ci=None if np.isnan(ci[1]) else (ci[1], ci[2]))
            if acc.has(node, "approx"):
                row["attribution"] = normalized_effect(acc.get(node, "approx"), clean=src, corrupted=tgt)
                metrics.add(node.name, "attribution_effect", float(row["attribution"]))
            rows.append(row)
            if acc.has(node, "pos_exact"):
                pe = acc.get(node, "pos_exact")
                pa = acc.get(node, "pos_approx") if acc.has(node, "pos_approx") else None
                effects = [normalized_effect(pe[:, p], clean=src, corrupted=tgt) for p in range(pe.shape[1])]
                for p, eff in enumerate(effects):
                    approx = normalized_effect(pa[:, p], clean=src, corrupted=tgt) if pa is not None else float("nan")
                    pos_rows.append({"node": node.name, "position": p, "effect": eff, "attribution": approx})
                peak = int(np.nanargmax(np.abs(effects))) if np.isfinite(effects).any() else 0
                metrics.add(node.name, "peak_position", peak)
                metrics.add(node.name, "peak_effect", effects[peak])
        table = pd.DataFrame(rows)
        positions = pd.DataFrame(pos_rows, columns=["node", "position", "effect", "attribution"])
        metrics.add("model", "logit_diff_clean", float(np.mean(src if self.direction == "denoising" else tgt)))
        metrics.add("model", "logit_diff_corrupted", float(np.mean(tgt if self.direction == "denoising" else src)))
        metrics.add("model", "n_pairs", len(src))
        figures = {"effects": _effects_figure(table, self.direction)}
        if self.attribution:
            both = pd.concat([table[["effect", "attribution"]], positions[["effect", "attribution"]]])
            agreement = rank_agreement(both["effect"], both["attribution"])
            metrics.add("model", "attribution_pearson", agreement["pearson"])
            metrics.add("model", "attribution_spearman", agreement["spearman"])
        if len(positions):
            figures["heatmap"] = heatmap_figure(
                positions.pivot(index="node", columns="position", values="effect").reindex(
                    [n.name for n in acc.nodes if n.name in set(positions["node"])]),
                title=f"Activation patching ({self.direction}): normalised logit-difference effect",
                label="normalised effect",
            )
        tables = {"effects": table, **({"positions": positions} if len(positions) else {})}
        return AnalysisResult(self.name, metrics=metrics, tables=tables,
                              figures=figures, notes=tuple(notes))


def _at_position(source: torch.Tensor, position: int) -> Edit:
    """An edit that patches ``source`` in at one token position."""

    def edit(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        out[:, position] = source[:, position]
        return out

    return edit


def _stacked_logit_diff(
    model: Any, inputs: dict[str, torch.Tensor], batch: PairBatch, replay: BlockReplay,
    edits: list[dict[Node, Edit]], *, positional: bool,
) -> list[torch.Tensor]:
    """Per-pair logit differences on ``inputs`` under each of ``edits``, from one stacked forward."""
    copies, rows = len(edits), len(batch)
    tiled = PairBatch(clean={}, corrupted={}, correct=batch.correct.repeat(copies), wrong=batch.wrong.repeat(copies))
    nodes = {node for edit in edits for node in edit}
    with replay.replaying(nodes, copies=copies, rows=rows), intervene(model, per_copy(edits, rows)):
        ld = logit_diff(model, tile(inputs, copies), tiled, positional=positional)
    return list(ld.reshape(copies, rows))


def _constant(value: torch.Tensor) -> Any:
    return lambda act: value


class _Accumulator:
    """Per-pair logit differences, gathered over batches."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self._data: dict[tuple[str, str], list[np.ndarray]] = {}

    def add_baselines(self, source: torch.Tensor, target: torch.Tensor) -> None:
        self._data.setdefault(("", "source"), []).append(source.detach().cpu().numpy())
        self._data.setdefault(("", "target"), []).append(target.detach().cpu().numpy())

    def add(self, node: Node, kind: str, values: torch.Tensor) -> None:
        self._data.setdefault((node.name, kind), []).append(values.detach().float().cpu().numpy())

    def has(self, node: Node, kind: str) -> bool:
        return (node.name, kind) in self._data

    def get(self, node: Node, kind: str) -> np.ndarray:
        return np.concatenate(self._data[(node.name, kind)])

    def baseline(self, which: str) -> np.ndarray:
        return np.concatenate(self._data[("", which)])


def _effects_figure(table: pd.DataFrame, direction: str) -> Figure:
    fig = Figure(figsize=(8, 3.2))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(len(table))
    err = np.vstack([table["effect"] - table["ci_low"], table["ci_high"] - table["effect"]])
    left.bar(x - 0.2, table["effect"], 0.4, yerr=np.nan_to_num(np.abs(err)), label="exact", capsize=2)
    left.bar(x + 0.2, table["attribution"], 0.4, label="attribution", color="#e8a33d")
    left.set_xticks(x, short_labels(table["node"].tolist()), rotation=60, ha="right", fontsize=6)
    left.set_ylabel("normalised effect")
    left.legend(fontsize=7)
    left.set_title(f"Patching ({direction}) per component", fontsize=8)
    right.scatter(table["effect"], table["attribution"], s=12)
    lims = [float(np.nanmin([table["effect"].min(), table["attribution"].min(), 0])),
            float(np.nanmax([table["effect"].max(), table["attribution"].max(), 1]))]
    right.plot(lims, lims, color="#888", lw=0.8, ls="--")
    right.set_xlabel("exact patching")
    right.set_ylabel("attribution patching")
    right.set_title("Agreement", fontsize=8)
    fig.tight_layout()
    return fig
