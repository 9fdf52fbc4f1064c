"""CausalTracing: where, layer by layer and token by token, does the model hold what it needs?

Meng et al. (2022, section 2.1): run the model three times on each probe example.

1. *Clean*: record every hidden state ``h_i^(l)`` and the probability ``P[o]`` of the
   target ``o`` (the clean prediction by default).
2. *Corrupted*: add Gaussian noise ``N(0, nu^2)`` to the input embeddings of the chosen
   tokens (the subject, in the paper); ``nu`` is ``noise`` times the standard deviation of
   the embeddings over the probe set (3 in the paper). The target probability drops to
   ``P*[o]``; the total effect is ``TE = P[o] - P*[o]``.
3. *Corrupted with restoration*: the same noise, but one hidden state ``h_i^(l)`` is set
   back to its clean value. The indirect effect ``IE = P*_{clean h_i^(l)}[o] - P*[o]`` says
   how much that single state carries.

The IE heatmap (layer x position) is the figure of the paper. It works for encoder
classifiers (``o`` is a class) and causal language models (``o`` is the next token at the
last real position). Noise samples of one example run as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from neuronmap._progress import progress
from neuronmap.analyses._figures import heatmap_figure
from neuronmap.analyses._replay import BlockReplay, per_copy, tile
from neuronmap.analyses.base import (
    Analysis,
    AnalysisContext,
    AnalysisResult,
    MetricSet,
    register_analysis,
)
from neuronmap.analyses.params import Interval, Options, Type
from neuronmap.capture.forward import probe_batches
from neuronmap.capture.hooks import model_device
from neuronmap.capture.interventions import Edit, Node, answer_logits, forward, intervene, logits_of, record
from neuronmap.capture.layers import resolve_layers
from neuronmap.errors import InvalidParameterError, ProbeSetError
from neuronmap.metrics.patching import indirect_effect, target_probability
from neuronmap.probe import ProbeSet
from neuronmap.stats import bootstrap_ci

__all__ = ["CausalTracing"]

Target = Literal["prediction", "label"]
_TARGETS = ("prediction", "label")
#: Restorations stacked into one forward hold up to this many times ``batch_size`` sequences.
_STACK = 4


@register_analysis
class CausalTracing(Analysis):
    """Indirect effect of restoring each hidden state (layer x position) after corrupting inputs.

    Args:
        layers: Selectors of the modules whose output states are restored, one heatmap row
            each (blocks such as ``bert.encoder.layer.*`` or ``transformer.h.*``; add the
            embedding module for a first row).
        corrupt: Which tokens get noise: ``None`` (every real token), fixed positions (a
            list of ints), or a probe column holding per example an int, a list of ints or a
            ``"start:stop"`` string (the subject tokens).
        target: ``"prediction"`` (the clean prediction, default), ``"label"`` (the probe
            label, a class or token id), or a fixed class/token id.
        noise: Noise scale in standard deviations of the embeddings (Meng et al.: 3).
        n_samples: Noise samples per example (Meng et al.: 10).
        embedding: Module whose output is corrupted; default the model's
            ``get_input_embeddings()`` (the token embeddings, before positions are added).
        max_examples: Trace at most this many probe examples (the first ones). Tracing costs
            ``layers x positions x n_samples`` sequence forwards per example (the blocks before
            the restored layer are replayed, not recomputed), so the default 12 (64 before
            issue 17, then 16) keeps 6 blocks of MiniLM on 15-token texts near 25 capture passes
            of 160 sentences; the heatmap's CIs are about sqrt(64/12) = 2.3x as wide as with 64
            (docs/performance.md).
        n_resamples: Bootstrap resamples (over examples) of the CIs.
        confidence: Coverage of the CIs.

    Example:
        >>> import neuronmap as nm
        >>> from neuronmap.testing import tiny_bert, tiny_text_probe
        >>> tracing = CausalTracing(layers="bert.encoder.layer.*", n_samples=2, max_examples=4)
        >>> monitor = nm.NeuronMap(tiny_text_probe(8), layers="bert.encoder.layer.0", analyses=[tracing], reporters=[])
        >>> report = monitor.run(tiny_bert(num_labels=2), step=0)
        >>> sorted(report.results["causal_tracing"].figures)
        ['heatmap']
    """

    needs_model = True  # restores states in corrupted forward passes
    name = "causal_tracing"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "layers": [Type(str, list, tuple, label="a layer selector (str) or a list of them")],  # required here
        "corrupt": [None, Type(str, list, tuple, label="a probe column (str) or a list of token positions")],
        "target": [Options(_TARGETS), Interval(int, 0, None)],
        "noise": [Interval(float, 0, None, closed="neither")],
        "n_samples": [Interval(int, 1, None)],
        "embedding": [None, str],
    }

    def __init__(
        self,
        *,
        layers: str | list[str],
        corrupt: str | Sequence[int] | None = None,
        target: Target | int = "prediction",
        noise: float = 3.0,
        n_samples: int = 10,
        embedding: str | None = None,
        max_examples: int | None = 12,
        n_resamples: int = 1000,
        confidence: float = 0.95,
    ) -> None:
        super().__init__(layers=layers)
        self.corrupt = corrupt if corrupt is None or isinstance(corrupt, str) else [int(p) for p in corrupt]
        self.target = target
        self.noise = float(noise)
        self.n_samples = n_samples
        self.embedding = embedding
        self.max_examples = max_examples
        self.n_resamples = n_resamples
        self.confidence = confidence

    def run(self, ctx: AnalysisContext) -> AnalysisResult:
        model = ctx.model
        probe = ctx.probe if self.max_examples is None else ctx.probe.subset(slice(0, self.max_examples))
        layers = resolve_layers(model, self.layers)  # type: ignore[arg-type]
        emb = Node(self.embedding or _embedding_name(model))
        resolve_layers(model, emb.module)
        corrupt_mask = _corrupt_mask(probe, self.corrupt)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                scale = self.noise * _embedding_std(model, probe, emb, ctx.batch_size, ctx.device)
                trace = self._trace(model, probe, layers, emb, corrupt_mask, scale, ctx)
        finally:
            model.train(was_training)
        return self._result(trace, layers, ctx.random_state, scale)

    def _trace(
        self, model: nn.Module, probe: ProbeSet, layers: list[str], emb: Node, corrupt_mask: torch.Tensor,
        scale: float, ctx: AnalysisContext,
    ) -> dict[str, Any]:
        # the noise is drawn where the embeddings live, so seed a generator on that device
        gen = torch.Generator(device=model_device(model)).manual_seed(ctx.random_state)
        chunk = max(1, ctx.batch_size // self.n_samples)
        p_clean: list[np.ndarray] = []
        p_corr: list[np.ndarray] = []
        ie: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
        starts = range(0, len(probe), chunk)
        for start in progress(starts, desc="causal tracing", unit="chunk"):
            sub = probe.subset(slice(start, min(start + chunk, len(probe))))
            # cut to the chunk's longest text: padding is masked out, so only the cost changes
            batch = next(probe_batches(sub, len(sub), ctx.device, trim=True))
            target = self._targets(model, batch, probe, start)
            clean, corrupted, rows = self._trace_chunk(
                model, batch, target, layers, emb, corrupt_mask[start : start + len(sub)], scale, gen,
                positional=probe.positional, batch_size=ctx.batch_size,
            )
            p_clean.append(clean)
            p_corr.append(corrupted)
            for layer in layers:
                ie[layer].append(rows[layer])
        return {"p_clean": np.concatenate(p_clean), "p_corr": np.concatenate(p_corr),
                "ie": {k: np.concatenate(v) for k, v in ie.items()}}

    def _trace_chunk(
        self, model: nn.Module, batch: dict[str, torch.Tensor], target: torch.Tensor, layers: list[str], emb: Node,
        corrupt_mask: torch.Tensor, scale: float, gen: torch.Generator, *, positional: bool, batch_size: int,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Clean, corrupted and restored target probabilities of one chunk of examples; the
        ``n_samples`` noise draws of each example run side by side in one batch."""
        size, width = corrupt_mask.shape
        with record(model, [Node(layer) for layer in layers]) as seen:
            logits = answer_logits(logits_of(forward(model, batch, positional=positional)), batch.get("attention_mask"))
        if int(target.max()) >= logits.shape[-1] or int(target.min()) < 0:
            raise InvalidParameterError(
                f"Causal-tracing targets must be class/token ids in [0, {logits.shape[-1] - 1}]; got "
                f"values from {int(target.min())} to {int(target.max())}."
            )
        p_clean = target_probability(logits, target).cpu().numpy()
        clean_states = {layer: seen[Node(layer)].repeat_interleave(self.n_samples, 0) for layer in layers}
        rep = {k: v.repeat_interleave(self.n_samples, 0) for k, v in batch.items()}
        rep_target = target.repeat_interleave(self.n_samples)
        mask = corrupt_mask.repeat_interleave(self.n_samples, 0).to(target.device)
        noise: list[torch.Tensor] = []

        def add_noise(act: torch.Tensor) -> torch.Tensor:
            # One draw per chunk, reused by every restoration run, as in Meng et al.
            if not noise:
                # drawn at the probe's full width, so a trimmed chunk gets the same draws as an untrimmed one
                shape = (act.shape[0], max(width, act.shape[1]), *act.shape[2:])
                eps = torch.randn(shape, generator=gen, device=act.device, dtype=act.dtype)[:, : act.shape[1]]
                noise.append(eps * scale * mask[:, : act.shape[1], None].to(act.dtype))
            return act + noise[0]

        def prob(edits: dict[Node, Edit]) -> np.ndarray:
            with intervene(model, edits):
                out = answer_logits(logits_of(forward(model, rep, positional=positional)), rep.get("attention_mask"))
            return target_probability(out, rep_target).reshape(size, self.n_samples).mean(dim=1).cpu().numpy()

        def probs(node: Node, edits: list[dict[Node, Edit]]) -> np.ndarray:
            """``prob`` of each of ``edits`` (restorations of ``node``), from one stacked forward."""
            copies, n = len(edits), len(rep_target)
            with replay.replaying([node], copies=copies, rows=n), intervene(model, per_copy(edits, n)):
                tiled = tile(rep, copies)
                out = answer_logits(logits_of(forward(model, tiled, positional=positional)),
                                    tiled.get("attention_mask"))
            p = target_probability(out, rep_target.repeat(copies))
            return p.reshape(copies, size, self.n_samples).mean(dim=2).cpu().numpy()

        # The corrupted run is the reference: a restoration at layer l leaves the blocks before
        # it as they were there, so those are replayed instead of recomputed (same tensors).
        replay = BlockReplay(model, [Node(layer) for layer in layers])
        with replay.recording():
            p_corrupted = prob({emb: add_noise})
        lengths = _lengths(batch, width)
        ie = {}
        for layer in layers:
            rows = np.full((size, width), np.nan)
            # Positions past the chunk's longest text are padding (NaN below): not worth a forward.
            node = Node(layer)
            positions = range(min(int(lengths.max()), clean_states[layer].shape[1]))
            # up to `stack` restorations (positions) go through the model as one stacked forward
            stack = max(1, _STACK * batch_size // len(rep_target))
            for start in range(0, len(positions), stack):
                chunk = positions[start : start + stack]
                edits = [{emb: _compose(add_noise, _restore(clean_states[layer], pos))} if node == emb else
                         {emb: add_noise, node: _restore(clean_states[layer], pos)} for pos in chunk]
                for pos, p_restored in zip(chunk, probs(node, edits), strict=True):
                    rows[:, pos] = indirect_effect(p_restored, p_corrupted)
            rows[np.arange(width)[None, :] >= lengths[:, None]] = np.nan
            ie[layer] = rows
        return p_clean, p_corrupted, ie

    def _targets(self, model: nn.Module, batch: dict[str, torch.Tensor], probe: ProbeSet, start: int) -> torch.Tensor:
        size = len(next(iter(batch.values())))
        device = next(iter(batch.values())).device
        if self.target == "prediction":
            output = forward(model, batch, positional=probe.positional)
            logits = answer_logits(logits_of(output), batch.get("attention_mask"))
            return logits.argmax(dim=-1)
        if self.target == "label":
            labels = probe.labels
            if labels is None:
                raise ProbeSetError("CausalTracing(target='label') needs probe labels; the probe set has none.")
            return torch.tensor(np.asarray(labels[start : start + size], dtype=np.int64), device=device)
        return torch.full((size,), int(self.target), device=device)

    def _result(self, trace: dict[str, Any], layers: list[str], seed: int, scale: float) -> AnalysisResult:
        metrics = MetricSet()
        te = trace["p_clean"] - trace["p_corr"]
        metrics.add("model", "total_effect", float(te.mean()), ci=_ci(te, self.n_resamples, seed, self.confidence))
        metrics.add("model", "p_clean", float(trace["p_clean"].mean()))
        metrics.add("model", "p_corrupted", float(trace["p_corr"].mean()))
        metrics.add("model", "noise_scale", scale)
        rows = []
        heat = {}
        for layer in layers:
            ie = trace["ie"][layer]
            counts = np.isfinite(ie).sum(axis=0)
            mean = np.divide(np.nansum(ie, axis=0), counts, out=np.full(ie.shape[1], np.nan), where=counts > 0)
            heat[layer] = mean
            rows += [{"layer": layer, "position": p, "indirect_effect": float(mean[p]), "n": int(counts[p])}
                     for p in range(ie.shape[1])]
            if np.isfinite(mean).any():
                peak = int(np.nanargmax(mean))
                column = ie[:, peak][np.isfinite(ie[:, peak])]
                metrics.add(layer, "peak_indirect_effect", float(mean[peak]),
                            ci=_ci(column, self.n_resamples, seed, self.confidence))
                metrics.add(layer, "peak_position", peak)
        table = pd.DataFrame(rows)
        frame = pd.DataFrame(heat).T
        fig = heatmap_figure(frame, title=f"Causal tracing: indirect effect on P[target] (TE = {te.mean():.3f})",
                             label="indirect effect")
        return AnalysisResult(self.name, metrics=metrics, tables={"indirect_effects": table}, figures={"heatmap": fig})


def _ci(values: np.ndarray, n_resamples: int, seed: int, confidence: float) -> tuple[float, float] | None:
    if len(values) < 3:
        return None
    ci = bootstrap_ci(np.mean, values, n_resamples=n_resamples, confidence=confidence, random_state=seed)
    return ci.low, ci.high


def _compose(first: Edit, second: Edit) -> Edit:
    return lambda act: second(first(act))


def _restore(clean: torch.Tensor, position: int) -> Edit:
    def edit(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        out[:, position] = clean[:, position]
        return out

    return edit


def _lengths(batch: dict[str, torch.Tensor], width: int) -> np.ndarray:
    mask = batch.get("attention_mask")
    size = len(next(iter(batch.values())))
    if mask is None or mask.ndim != 2:
        return np.full(size, width)
    return mask.sum(dim=1).cpu().numpy()


def _embedding_name(model: nn.Module) -> str:
    getter = getattr(model, "get_input_embeddings", None)
    module = getter() if callable(getter) else None
    for name, candidate in model.named_modules():
        if module is not None and candidate is module:
            return name
    raise InvalidParameterError(
        f"{type(model).__name__} has no get_input_embeddings(); pass embedding='<module name>' (the "
        "module whose output is the token embeddings) to CausalTracing."
    )


def _embedding_std(model: nn.Module, probe: ProbeSet, emb: Node, batch_size: int, device: torch.device | None) -> float:
    """Standard deviation of the embedding entries over every real token of the probe set."""
    total, total_sq, count = 0.0, 0.0, 0
    for batch in probe_batches(probe, batch_size, device):
        with record(model, [emb]) as seen:
            forward(model, batch, positional=probe.positional)
        act = seen[emb].double()
        mask = batch.get("attention_mask")
        if act.ndim == 3 and mask is not None and mask.shape == act.shape[:2]:
            act = act[mask.bool()]
        total += float(act.sum())
        total_sq += float((act**2).sum())
        count += act.numel()
    mean = total / count
    return float(np.sqrt(max(total_sq / count - mean**2, 0.0)))


def _corrupt_mask(probe: ProbeSet, corrupt: str | list[int] | None) -> torch.Tensor:
    """``[n, tokens]`` bool: which token embeddings receive noise."""
    ids = next(iter(probe.inputs.values()))
    if ids.ndim < 2:
        raise ProbeSetError(
            f"Causal tracing needs token sequences [n, tokens]; the probe inputs have shape {tuple(ids.shape)}."
        )
    n, width = ids.shape[:2]
    real = probe.attention_mask.bool() if probe.attention_mask is not None else torch.ones(n, width, dtype=torch.bool)
    if corrupt is None:
        return real
    mask = torch.zeros(n, width, dtype=torch.bool)
    if isinstance(corrupt, str):
        for i, spec in enumerate(probe.column(corrupt)):
            mask[i, _positions(spec, width)] = True
    else:
        mask[:, _positions(corrupt, width)] = True
    return mask & real


def _positions(spec: Any, width: int) -> list[int]:
    if isinstance(spec, str) and ":" in spec:
        lo, _, hi = spec.partition(":")
        out = list(range(int(lo or 0), int(hi) if hi else width))
    elif isinstance(spec, (int, np.integer)):
        out = [int(spec)]
    else:
        out = [int(p) for p in spec]
    bad = [p for p in out if not -width <= p < width]
    if bad:
        raise ProbeSetError(f"Corrupted positions {bad} are outside the sequence length {width}.")
    return out
