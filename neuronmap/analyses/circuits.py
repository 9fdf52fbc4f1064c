"""CircuitDiscovery: the smallest set of heads and MLPs that still does the task.

A node-level version of ACDC (Conmy et al. 2023, Algorithm 1). On clean prompts, a node
is *ablated* by patching in its activation from the paired corrupted prompt. Starting from
the full model, the nodes are visited from the output toward the input (or in order of
increasing single-node effect) and a node is ablated for good when the model still keeps
at least ``keep`` of its task metric without it:

``(LD_circuit - LD_corrupted) / (LD_clean - LD_corrupted) >= keep``,

with ``LD`` the mean logit difference (Wang et al. 2022). Passes repeat until no node can
go, so the result is minimal: removing any one kept node drops below ``keep``. Greedy
search does not guarantee the *smallest* such set (the problem is NP-hard in general);
ACDC shares this limitation.

Activations of ablated nodes come from a corrupted run of the same batch, recomputed per
evaluation, so memory stays one batch of activations.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from neuronmap._progress import progress
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
from neuronmap.analyses.params import Interval, Options
from neuronmap.capture.interventions import Node, intervene, record
from neuronmap.metrics.patching import normalized_effect

__all__ = ["CircuitDiscovery"]

Order = Literal["reverse", "effect"]
#: Single-node ablations stacked into one forward hold up to this many times ``batch_size`` sequences.
_STACK = 4
_ORDERS = ("reverse", "effect")


@register_analysis
class CircuitDiscovery(PairedNodeAnalysis):
    """Greedy, ACDC-style pruning of heads and MLPs by activation patching.

    Args:
        pairs: Probe column of corrupted-partner indices, or ``(clean, corrupted)`` pairs.
        layers: Selectors of modules that are nodes as a whole (MLPs, e.g.
            ``bert.encoder.layer.*.output.dense`` or ``transformer.h.*.mlp``).
        heads: Selectors of attention output projections split into head nodes.
        n_heads: Heads per projection (default: ``model.config.num_attention_heads``).
        keep: Fraction of the clean-corrupted logit-difference gap the circuit must keep.
        order: ``"reverse"`` (output to input, as ACDC) or ``"effect"`` (weakest single
            node first).
        max_passes: Passes over the nodes (stops early when a pass removes nothing).
        answers: ``"label"`` or ``"prediction"`` (see :class:`ActivationPatching`).
        max_pairs: Search on at most this many pairs, a seeded random subset (``None``: every
            pair). Every evaluation of the greedy search runs them all; the default 32 (new in
            issue 17; before, every pair) keeps 6 MLPs + 72 heads of MiniLM near 20 capture
            passes of 160 sentences (docs/performance.md gives the effect on the circuit found).
        n_resamples: Bootstrap resamples (over pairs) of the retained-metric CI.
        confidence: Coverage of that CI.

    Example:
        >>> import torch
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp
        >>> x = torch.randn(16, 8)
        >>> x[1::2] = -x[0::2]  # each odd row is the corrupted partner of the row before
        >>> partner = [i + 1 if i % 2 == 0 else -1 for i in range(16)]
        >>> probe = nm.ProbeSet(x, labels=[1, 0] * 8, metadata={"partner": partner})
        >>> circuits = CircuitDiscovery(pairs="partner", layers=["net.1", "net.3"])
        >>> report = nm.NeuronMap(probe, layers="net.1", analyses=[circuits], reporters=[]).run(tiny_mlp(), step=0)
        >>> report.metrics["neuronmap/circuit_discovery/model/metric_retained"] >= 0.9
        True
    """

    name = "circuit_discovery"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "keep": [Interval(float, 0, 1, closed="right")],
        "order": [Options(_ORDERS)],
        "max_passes": [Interval(int, 1, None)],
    }

    def __init__(
        self,
        *,
        pairs: PairsArg = "corrupted_index",
        layers: str | list[str] | None = None,
        heads: str | list[str] | None = None,
        n_heads: int | None = None,
        keep: float = 0.9,
        order: Order = "reverse",
        max_passes: int = 3,
        answers: Answers = "label",
        max_pairs: int | None = 32,
        n_resamples: int = 1000,
        confidence: float = 0.95,
    ) -> None:
        super().__init__(pairs=pairs, layers=layers, heads=heads, n_heads=n_heads, answers=answers,
                         n_resamples=n_resamples, confidence=confidence, nodes_role="as candidate nodes",
                         max_pairs=max_pairs)
        self.keep = keep
        self.order = order
        self.max_passes = max_passes

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        model = ctx.model
        nodes, batches, notes = self.prepare(ctx)
        if not batches:
            return AnalysisResult(self.name, status="skipped", notes=(*notes, "No pair with distinct answers."))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                search = _Search(model, nodes, batches, positional=ctx.probe.positional)
                # single-node ablations of one module (a projection's heads) share a stacked forward
                groups: dict[str, list[Node]] = {}
                for node in nodes:
                    groups.setdefault(node.module, []).append(node)
                for group in progress(list(groups.values()), desc="circuit discovery: modules", unit="module"):
                    search.score_singles(group, stack=max(1, _STACK * ctx.batch_size // len(batches[0])))
                single = {n: 1.0 - search.score({n}) for n in nodes}
                ablated, removed_at = self._prune(search, nodes, single)
                final = search.evaluate(ablated)
        finally:
            model.train(was_training)
        retained = normalized_effect_ci(final, search.clean, search.corrupted, n_resamples=self.n_resamples,
                                        seed=ctx.random_state, confidence=self.confidence)
        kept = [n for n in nodes if n not in ablated]
        metrics = MetricSet()
        metrics.add("model", "metric_retained", retained[0], ci=None if np.isnan(retained[1]) else retained[1:])
        metrics.add("model", "circuit_size", len(kept))
        metrics.add("model", "circuit_fraction", len(kept) / len(nodes))
        metrics.add("model", "logit_diff_clean", float(search.clean.mean()))
        metrics.add("model", "logit_diff_corrupted", float(search.corrupted.mean()))
        rows = []
        for node in nodes:
            metrics.add(node.name, "in_circuit", float(node not in ablated))
            metrics.add(node.name, "ablation_effect", single[node])
            rows.append({"node": node.name, "module": node.module, "head": node.head, "block": node.block,
                         "in_circuit": node not in ablated, "ablation_effect": single[node],
                         "removed_at_step": removed_at.get(node)})
        table = pd.DataFrame(rows)
        return AnalysisResult(
            self.name, metrics=metrics, tables={"nodes": table},
            figures={"circuit": _graph_figure(table, retained[0], self.keep)}, notes=tuple(notes),
        )

    def _prune(
        self, search: _Search, nodes: list[Node], single: dict[Node, float]
    ) -> tuple[set[Node], dict[Node, int]]:
        visit = list(reversed(nodes)) if self.order == "reverse" else sorted(nodes, key=lambda n: single[n])
        ablated: set[Node] = set()
        removed_at: dict[Node, int] = {}
        for step in range(self.max_passes):
            changed = False
            for node in progress(visit, desc=f"circuit discovery: pass {step + 1}", unit="node"):
                if node in ablated:
                    continue
                if search.score(ablated | {node}) >= self.keep:
                    ablated.add(node)
                    removed_at[node] = len(removed_at)
                    changed = True
            if not changed:
                break
        return ablated, removed_at


class _Search:
    """Evaluates the task metric with a set of nodes ablated (patched from corrupted runs)."""

    def __init__(self, model: nn.Module, nodes: list[Node], batches: list[PairBatch], *, positional: bool) -> None:
        self.model, self.nodes, self.batches, self.positional = model, nodes, batches, positional
        # Each batch's clean run is the reference whose early blocks (those before the first
        # ablated node) every evaluation replays instead of recomputing: the same tensors.
        self._replays = [BlockReplay(model, nodes) for _ in batches]
        clean = []
        for b, replay in zip(batches, self._replays, strict=True):
            with replay.recording():
                clean.append(logit_diff(model, b.clean, b, positional=positional).cpu().numpy())
        self.clean = np.concatenate(clean)
        # A greedy pass often re-tests a node against the same ablated set as the pass before
        # (every node after the last removal); the score of a set is computed once.
        self._scores: dict[frozenset[Node], float] = {}
        # The corrupted run is never patched, so every node's corrupted activation is recorded
        # once here instead of re-running the corrupted prompts in every evaluation (which
        # halves the forward passes of the search; the values are the same tensors).
        corrupted: list[np.ndarray] = []
        self._sources: list[dict[Node, torch.Tensor]] = []
        for b in batches:
            with record(model, nodes) as seen:
                corrupted.append(logit_diff(model, b.corrupted, b, positional=positional).cpu().numpy())
            self._sources.append(dict(seen))
        self.corrupted = np.concatenate(corrupted)

    def evaluate(self, ablated: set[Node]) -> np.ndarray:
        """Per-pair logit difference on clean prompts with ``ablated`` nodes patched."""
        if not ablated:
            return self.clean
        out = []
        for batch, seen, replay in zip(self.batches, self._sources, self._replays, strict=True):
            edits: dict[Node, Any] = {n: _constant(seen[n]) for n in ablated}
            with replay.replaying(ablated), intervene(self.model, edits):
                out.append(logit_diff(self.model, batch.clean, batch, positional=self.positional).cpu().numpy())
        return np.concatenate(out)

    def score_singles(self, nodes: list[Node], *, stack: int) -> None:
        """Score each node ablated alone, ``stack`` of them per stacked forward (cached for :meth:`score`)."""
        for start in range(0, len(nodes), stack):
            chunk = nodes[start : start + stack]
            out = []
            for batch, seen, replay in zip(self.batches, self._sources, self._replays, strict=True):
                edits: list[dict[Node, Any]] = [{n: _constant(seen[n])} for n in chunk]
                copies, rows = len(chunk), len(batch)
                tiled = PairBatch(clean={}, corrupted={}, correct=batch.correct.repeat(copies),
                                  wrong=batch.wrong.repeat(copies))
                with replay.replaying(chunk, copies=copies, rows=rows), intervene(self.model, per_copy(edits, rows)):
                    ld = logit_diff(self.model, tile(batch.clean, copies), tiled, positional=self.positional)
                out.append(ld.reshape(copies, rows).cpu().numpy())
            for node, values in zip(chunk, np.concatenate(out, axis=1), strict=True):
                self._scores[frozenset({node})] = normalized_effect(values, clean=self.clean, corrupted=self.corrupted)

    def score(self, ablated: set[Node]) -> float:
        """Normalised metric: 1 for the full model, 0 for the corrupted run."""
        key = frozenset(ablated)
        if key not in self._scores:
            self._scores[key] = normalized_effect(self.evaluate(ablated), clean=self.clean, corrupted=self.corrupted)
        return self._scores[key]


def _constant(value: torch.Tensor) -> Any:
    return lambda act: value


def _graph_figure(table: pd.DataFrame, retained: float, keep: float) -> Figure:
    """Nodes by block (columns) with kept ones coloured by single-node effect; edges join kept
    nodes of consecutive blocks through the residual stream, from the input to the output."""
    blocks = [b if b is not None and not pd.isna(b) else i for i, b in enumerate(table["block"])]
    order = sorted(set(blocks))
    column = {b: i + 1 for i, b in enumerate(order)}
    fig = Figure(figsize=(2 + 1.6 * len(order), 3.4))
    ax = fig.subplots()
    pos: dict[int, tuple[float, float]] = {}
    for b in order:
        members = [i for i, bb in enumerate(blocks) if bb == b]
        for j, i in enumerate(members):
            pos[i] = (column[b], j - (len(members) - 1) / 2)
    ymax = max([abs(p[1]) for p in pos.values()] + [1.0])
    kept = [i for i in range(len(table)) if table["in_circuit"].iloc[i]]
    layers_kept = [[i for i in kept if blocks[i] == b] for b in order]
    chain = [[-1]] + [lk for lk in layers_kept if lk] + [[-2]]
    ends = {-1: (0.0, 0.0), -2: (len(order) + 1.0, 0.0)}
    for left, right in itertools.pairwise(chain):
        for a in left:
            for b in right:
                (x0, y0), (x1, y1) = pos.get(a, ends.get(a, (0.0, 0.0))), pos.get(b, ends.get(b, (0.0, 0.0)))
                ax.plot([x0, x1], [y0, y1], color="#4a6fa5", lw=1.0, alpha=0.6, zorder=1)
    effects = table["ablation_effect"].to_numpy(dtype=float)
    scale = max(float(np.nanmax(np.abs(effects))) if np.isfinite(effects).any() else 1.0, 1e-9)
    for i, (x, y) in pos.items():
        inside = bool(table["in_circuit"].iloc[i])
        ax.scatter([x], [y], s=420, zorder=2, edgecolors="#333" if inside else "#bbb",
                   c=[(0.85, 0.3, 0.2, 0.25 + 0.75 * min(1.0, abs(effects[i]) / scale))] if inside else [(1, 1, 1, 1)],
                   linestyle="-" if inside else "--")
        head = table["head"].iloc[i]
        module, block = str(table["module"].iloc[i]), table["block"].iloc[i]
        inner = module.split(f".{int(block)}.", 1)[-1] if block is not None and not pd.isna(block) else module
        label = f"h{int(head)}" if head is not None and not pd.isna(head) else inner.replace(".", "\n")
        ax.text(x, y, label, ha="center", va="center", fontsize=6, zorder=3, color="#222" if inside else "#999")
    for key, name in ((-1, "input"), (-2, "output")):
        ax.scatter([ends[key][0]], [0], marker="s", s=300, c="#ddd", edgecolors="#333", zorder=2)
        ax.text(ends[key][0], -0.45, name, ha="center", fontsize=7)
    ax.set_xticks([column[b] for b in order], [f"block {b}" for b in order], fontsize=7)
    ax.set_yticks([])
    ax.set_xlim(-0.6, len(order) + 1.6)
    ax.set_ylim(-ymax - 0.8, ymax + 0.8)
    ax.set_title(f"Circuit: {len(kept)}/{len(table)} nodes keep {retained:.2f} of the metric (target {keep:.2f})",
                 fontsize=8)
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)
    fig.tight_layout()
    return fig
