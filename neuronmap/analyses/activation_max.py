"""ActivationMaximization: what input drives a unit, synthesised and found in the probe set.

Two views of a unit (or a direction) of one layer, tracked over training:

* *Synthesis*: gradient ascent on the input (pixels, or token embeddings for text, substituted
  at the embedding layer) to maximise the unit, with L2, total-variation and jitter
  regularisation (Erhan et al. 2009, "Visualizing Higher-Layer Features of a Deep Network";
  Simonyan et al. 2014, eq. 1; Mahendran & Vedaldi 2015, Sec. 3.2; Olah et al. 2017, "Feature
  Visualization", Distill). Text embeddings are decoded to their nearest vocabulary tokens.
* *Dataset examples*: the probe examples that activate the unit most (Olah et al. 2017,
  "Dataset examples"; Zeiler & Fergus 2014).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from neuronmap.analyses._input_space import InputSpace, token_labels
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval, Options, Type
from neuronmap.capture.forward import extract_tensor
from neuronmap.capture.layers import resolve_layers
from neuronmap.capture.reduce import reduce_tokens
from neuronmap.errors import InvalidParameterError

__all__ = ["ActivationMaximization"]

Init = Literal["probe", "noise"]
_INITS: tuple[str, ...] = get_args(Init)


@register_analysis
class ActivationMaximization(Analysis):
    """Maximise units or directions of one layer; report the top-activating probe examples.

    A unit's activation on an example is the layer output at that unit, averaged over real
    tokens (``[n, t, d]`` outputs) or over space (``[n, C, H, W]`` outputs, a channel); a
    direction ``v`` scores ``<a, v / |v|>``. Synthesis minimises
    ``-a_u(x) + l2 * mean(x^2) + tv * TV(x)`` with Adam, from the ``start_example``-th probe input
    (``init="probe"``) or small noise around it (``init="noise"``); images are shifted by up to
    ``jitter`` pixels at every step (TV and jitter apply to images only: token positions carry
    meaning and have no neighbourhood to smooth).

    Metrics per unit (``unit<k>`` or ``direction<i>``) under ``<layer>``: ``<unit>_start`` and
    ``<unit>_optimized`` (activation before and after synthesis), ``<unit>_probe_max`` (highest
    activation on the probe set). Tables: ``top_examples``; for text also ``optimized_tokens``
    (the nearest vocabulary token, by cosine similarity, to every optimised embedding).
    Figures: ``top_examples``; ``optimized`` for images.

    Args:
        layer: Selector naming exactly one module.
        units: Unit indices and/or directions (sequences of floats, one per unit of the layer).
        steps: Optimisation steps.
        lr: Adam learning rate.
        l2: Weight of the L2 penalty on the input.
        tv: Weight of the total-variation penalty (images).
        jitter: Largest random shift in pixels per step (images).
        init: ``probe`` (start at a probe input) or ``noise`` (add Gaussian noise of the input's
            standard deviation to it).
        start_example: Index of the probe example to start from.
        top_k: Dataset examples per unit.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_mlp, tiny_probe
        >>> amax = ActivationMaximization("net.2", units=[0, 3], steps=20)
        >>> monitor = nm.NeuronMap(tiny_probe(), layers=["net.2"], analyses=[amax], reporters=[])
        >>> m = monitor.run(tiny_mlp(), step=0).metrics
        >>> m["neuronmap/activation_max/net.2/unit0_optimized"] > m["neuronmap/activation_max/net.2/unit0_start"]
        True
    """

    needs_model = True  # optimises inputs through the model
    name = "activation_max"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "layer": [Type(str, label="a selector (str) naming one module")],
        "units": [Type(list, tuple, label="a non-empty list of unit indices and/or directions")],
        "steps": [Interval(int, 1, None)],
        "lr": [Interval(float, 0, None, closed="neither")],
        "l2": [Interval(float, 0, None)],
        "tv": [Interval(float, 0, None)],
        "jitter": [Interval(int, 0, None)],
        "init": [Options(_INITS)],
        "start_example": [Interval(int, 0, None)],
    }

    def __init__(
        self,
        layer: str,
        *,
        units: Sequence[int | Sequence[float]] = (0,),
        steps: int = 64,
        lr: float = 0.05,
        l2: float = 1e-3,
        tv: float = 1e-2,
        jitter: int = 1,
        init: Init = "probe",
        start_example: int = 0,
        top_k: int = 5,
    ) -> None:
        super().__init__(layers=None)
        if not units:
            raise InvalidParameterError(
                f"ActivationMaximization: units must be a non-empty list of unit indices and/or directions; "
                f"got {units!r}."
            )
        self.layer = layer
        self.units = [u if isinstance(u, int) else [float(v) for v in u] for u in units]
        self.steps, self.lr, self.l2, self.tv, self.jitter = steps, lr, l2, tv, int(jitter)
        self.init = init
        self.start_example = start_example
        self.top_k = top_k

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        model = ctx.model.eval()
        names = resolve_layers(model, self.layer)
        if len(names) != 1:
            raise InvalidParameterError(
                f"ActivationMaximization needs one layer; the selector {self.layer!r} matches {len(names)}: "
                f"{names[:5]}."
            )
        layer = names[0]
        module = dict(model.named_modules())[layer]
        space = InputSpace(model, ctx.probe)
        values, width = self._probe_values(space, module, ctx)
        labels = self._labels()
        start = ctx.probe.subset([self.start_example])
        start_space = InputSpace(model, start)
        batch = next(start_space.batches(1, ctx.device))
        rows = len(self.units)
        x0 = batch.inputs.expand(rows, *batch.inputs.shape[1:]).clone()
        extras = tuple(e.expand(rows, *e.shape[1:]) for e in batch.extras)
        mask = None if batch.mask is None else batch.mask.expand(rows, -1)
        directions = self._directions(width, ctx.device)
        begin, end, x = self._optimise(start_space, module, x0, extras, mask, directions, ctx)

        metrics = MetricSet()
        for u, label in enumerate(labels):
            metrics.add(layer, f"{label}_start", float(begin[u]))
            metrics.add(layer, f"{label}_optimized", float(end[u]))
            metrics.add(layer, f"{label}_probe_max", float(values[:, u].max()))
        top = self._top_examples(values, labels, ctx)
        tables = {"top_examples": top}
        figures = {"top_examples": _bars(top, labels)}
        if space.kind == "embeddings" and batch.mask is not None and batch.ids is not None:
            tables["optimized_tokens"] = _nearest_tokens(
                x, batch.mask[0], space.embedding.weight, labels, ctx
            )
        elif x.ndim == 4:
            figures["optimized"] = _images(x, labels)
        notes = (
            f"Synthesis started from probe example {self.start_example} (init={self.init!r}).",
        )
        return AnalysisResult(
            self.name, metrics=metrics, tables=tables, figures=figures, notes=notes
        )

    # ------------------------------------------------------------------ pieces
    def _labels(self) -> list[str]:
        labels, d = [], 0
        for u in self.units:
            if isinstance(u, int):
                labels.append(f"unit{u}")
            else:
                labels.append(f"direction{d}")
                d += 1
        return labels

    def _directions(self, width: int, device: torch.device | None) -> torch.Tensor:
        """``[width, units]`` matrix whose columns read out each unit or direction."""
        columns = []
        for u in self.units:
            if isinstance(u, int):
                if not 0 <= u < width:
                    raise InvalidParameterError(
                        f"Unit {u} is out of range: the layer has {width} units."
                    )
                column = torch.zeros(width)
                column[u] = 1.0
            else:
                column = torch.as_tensor(u, dtype=torch.float32)
                if column.shape != (width,) or float(column.norm()) == 0:
                    raise InvalidParameterError(
                        f"A direction needs {width} values (the layer's units), not all zero; got shape "
                        f"{tuple(column.shape)}."
                    )
                column = column / column.norm()
            columns.append(column)
        return torch.stack(columns, dim=1).to(device)

    def _probe_values(
        self, space: InputSpace, module: nn.Module, ctx: AnalysisContext
    ) -> tuple[np.ndarray, int]:
        """``[n, units]`` activations of every unit/direction on the probe set, and the layer width."""
        reduced: list[torch.Tensor] = []
        with torch.no_grad():
            for batch in space.batches(ctx.batch_size, ctx.device):
                reduced.append(
                    _activation(space, module, batch.inputs, batch.extras, batch.mask).cpu()
                )
        acts = torch.cat(reduced)
        return (acts @ self._directions(acts.shape[1], None)).double().numpy(), int(acts.shape[1])

    def _optimise(
        self,
        space: InputSpace,
        module: nn.Module,
        x0: torch.Tensor,
        extras: tuple[torch.Tensor, ...],
        mask: torch.Tensor | None,
        directions: torch.Tensor,
        ctx: AnalysisContext,
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        gen = torch.Generator(device="cpu").manual_seed(ctx.random_state)
        rows = torch.arange(len(x0))

        def objective(x: torch.Tensor) -> torch.Tensor:
            acts = _activation(space, module, x, extras, mask)
            return (acts @ directions.to(acts.dtype))[rows, rows]

        with torch.no_grad():
            begin = objective(x0).double().cpu().numpy()
        x = x0.clone()
        if self.init == "noise":
            x = x + torch.randn(x.shape, generator=gen).to(x) * x0.std()
        x.requires_grad_(True)
        optimiser = torch.optim.Adam([x], lr=self.lr)
        image = x.ndim == 4
        for _ in range(self.steps):
            shifted = x
            if image and self.jitter > 0:
                dy, dx = (
                    int(v)
                    for v in torch.randint(-self.jitter, self.jitter + 1, (2,), generator=gen)
                )
                shifted = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
            with torch.enable_grad():
                loss = (
                    -objective(shifted).sum()
                    + self.l2 * x.pow(2).mean(dim=tuple(range(1, x.ndim))).sum()
                )
                if image and self.tv > 0:
                    loss = loss + self.tv * _total_variation(x).sum()
                # Gradients w.r.t. the input only: the model's own .grad buffers stay untouched.
                (x.grad,) = torch.autograd.grad(loss, x)
            optimiser.step()
        x = x.detach()
        with torch.no_grad():
            end = objective(x).double().cpu().numpy()
        return begin, end, x

    def _top_examples(
        self, values: np.ndarray, labels: list[str], ctx: AnalysisContext
    ) -> pd.DataFrame:
        texts = ctx.probe.texts
        probe_labels = ctx.probe.labels
        rows = []
        k = min(self.top_k, len(values))
        for u, label in enumerate(labels):
            order = np.argsort(-values[:, u], kind="stable")[:k]
            for rank, i in enumerate(order, start=1):
                row: dict[str, Any] = {
                    "unit": label,
                    "rank": rank,
                    "example": int(i),
                    "activation": float(values[i, u]),
                }
                if probe_labels is not None:
                    row["label"] = probe_labels[i]
                if texts is not None:
                    row["text"] = texts[i]
                rows.append(row)
        return pd.DataFrame(rows)


def _activation(
    space: InputSpace,
    module: nn.Module,
    x: torch.Tensor,
    extras: Sequence[torch.Tensor],
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """``[n, d]`` layer activations on continuous inputs (tokens averaged, channels pooled)."""
    seen: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: Any, output: Any) -> None:
        hidden = extract_tensor(output)
        if hidden is None:
            raise InvalidParameterError(f"{type(mod).__name__} output holds no tensor to maximise.")
        seen.append(hidden)

    handle = module.register_forward_hook(hook)
    try:
        space.call(x, *extras)
    finally:
        handle.remove()
    hidden = seen[0]
    if hidden.ndim == 4:
        return hidden.mean(dim=(2, 3))
    if hidden.ndim == 3:
        return reduce_tokens(hidden, "mean", mask)
    return hidden.reshape(len(hidden), -1)


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-example ``TV^2``: mean squared difference of vertical and horizontal neighbours.

    Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by Inverting Them",
    eq. (5) with beta = 2.
    """
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean(dim=tuple(range(1, x.ndim)))
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean(dim=tuple(range(1, x.ndim)))
    return dh + dw


def _nearest_tokens(
    x: torch.Tensor,
    mask: torch.Tensor,
    vocabulary: torch.Tensor,
    labels: list[str],
    ctx: AnalysisContext,
) -> pd.DataFrame:
    emb = torch.nn.functional.normalize(x.float(), dim=-1)
    vocab = torch.nn.functional.normalize(vocabulary.detach().float().to(emb.device), dim=-1)
    cosine, ids = (emb @ vocab.T).max(dim=-1)
    keep = mask.bool().cpu().numpy()
    spelled = _spelling(ctx)
    rows = []
    for u, label in enumerate(labels):
        for position in np.flatnonzero(keep):
            token = int(ids[u, position])
            rows.append(
                {
                    "unit": label,
                    "position": int(position),
                    "token_id": token,
                    "token": spelled.get(token, f"#{token}"),
                    "cosine": float(cosine[u, position]),
                }
            )
    return pd.DataFrame(rows)


def _spelling(ctx: AnalysisContext) -> dict[int, str]:
    """Token id -> word, from the probe texts wherever words and tokens align."""
    ids = ctx.probe.inputs.get("input_ids")
    mask = ctx.probe.attention_mask
    if ids is None or mask is None:
        return {}
    rows = [ids[i][mask[i].bool()].numpy() for i in range(len(ids))]
    spelled: dict[int, str] = {}
    for row, words in zip(rows, token_labels(ctx.probe.texts, rows), strict=True):
        for token, word in zip(row, words, strict=True):
            spelled.setdefault(int(token), word)
    return spelled


def _bars(table: pd.DataFrame, labels: list[str]) -> Figure:
    fig = Figure(figsize=(3.4 * len(labels), 2.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(labels), squeeze=False)[0])
    for ax, label in zip(axes, labels, strict=True):
        part = table[table["unit"] == label].iloc[::-1]
        names = (
            part["text"].str.slice(0, 28) if "text" in part else "#" + part["example"].astype(str)
        )
        ax.barh(range(len(part)), part["activation"], color="#5a8f29")
        ax.set_yticks(range(len(part)), list(names), fontsize=6)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("activation", fontsize=7)
    fig.suptitle("Top-activating probe examples", fontsize=9)
    return fig


def _images(x: torch.Tensor, labels: list[str]) -> Figure:
    fig = Figure(figsize=(2.0 * len(labels), 2.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(labels), squeeze=False)[0])
    for ax, image, label in zip(axes, x.float().cpu().numpy(), labels, strict=True):
        shown = image.transpose(1, 2, 0) if image.shape[0] == 3 else image.mean(0)
        ax.imshow(
            (shown - shown.min()) / (np.ptp(shown) or 1.0),
            cmap=None if image.shape[0] == 3 else "gray",
        )
        ax.set_title(label, fontsize=8)
        ax.set_axis_off()
    fig.suptitle("Optimised inputs", fontsize=9)
    return fig
