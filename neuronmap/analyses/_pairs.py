"""Clean/corrupted prompt pairs from a probe set, and the logit difference they are judged by.

Shared by :class:`~neuronmap.analyses.patching.ActivationPatching` and
:class:`~neuronmap.analyses.circuits.CircuitDiscovery`. Pairs are given as

* the name of a probe column holding, for each clean row, the index of its corrupted
  partner (a negative number or NaN on rows that are not clean prompts), or
* a list of ``(clean_index, corrupted_index)`` tuples.

The two prompts of a pair must be token-aligned (same length, same positions), as in the
templates of Wang et al. (2022): patching copies activations position by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from neuronmap.analyses.base import Analysis, AnalysisContext
from neuronmap.analyses.params import Interval, Options, Type
from neuronmap.capture.forward import forward, logits_of, probe_batches
from neuronmap.capture.interventions import Node, answer_logits, resolve_nodes
from neuronmap.errors import InvalidParameterError, ProbeSetError
from neuronmap.metrics.patching import logit_difference, normalized_effect
from neuronmap.probe import ProbeSet
from neuronmap.stats import bootstrap_ci

PairsArg = str | Sequence[tuple[int, int]]
Answers = Literal["label", "prediction"]
ANSWERS = ("label", "prediction")


@dataclass(frozen=True)
class PairBatch:
    """One batch of pairs on the model's device."""

    clean: dict[str, torch.Tensor]
    corrupted: dict[str, torch.Tensor]
    correct: torch.Tensor
    """Answer of the clean prompt (class or token id)."""
    wrong: torch.Tensor
    """Answer of the corrupted prompt."""

    def __len__(self) -> int:
        return len(self.correct)


def resolve_pairs(probe: ProbeSet, pairs: PairsArg) -> tuple[np.ndarray, np.ndarray]:
    """``(clean_indices, corrupted_indices)`` of the probe examples.

    Raises:
        ProbeSetError: Missing column, indices out of range, or no pair at all.
    """
    if isinstance(pairs, str):
        partner = np.asarray(probe.column(pairs), dtype=float)
        clean = np.flatnonzero(np.isfinite(partner) & (partner >= 0))
        corrupted = partner[clean].astype(int)
    else:
        arr = np.asarray(list(pairs), dtype=int).reshape(-1, 2)
        clean, corrupted = arr[:, 0], arr[:, 1]
    if clean.size == 0:
        raise ProbeSetError(f"No clean/corrupted pair found in probe set {probe.name!r} (pairs={pairs!r}).")
    both = np.r_[clean, corrupted]
    if both.min() < 0 or both.max() >= len(probe):
        raise ProbeSetError(
            f"Pair indices must lie in [0, {len(probe) - 1}]; got values from {both.min()} to {both.max()}."
        )
    return clean, corrupted


def logit_diff(
    model: nn.Module, inputs: dict[str, torch.Tensor], batch: PairBatch, *, positional: bool
) -> torch.Tensor:
    """Per-pair logit difference ``logit[correct] - logit[wrong]`` of one forward on ``inputs``."""
    logits = answer_logits(logits_of(forward(model, inputs, positional=positional)), inputs.get("attention_mask"))
    return logit_difference(logits, batch.correct, batch.wrong)


def pair_batches(
    model: nn.Module,
    probe: ProbeSet,
    pairs: PairsArg,
    *,
    answers: Answers,
    batch_size: int,
    device: torch.device | None,
    max_pairs: int | None = None,
    seed: int = 0,
) -> tuple[list[PairBatch], list[str]]:
    """Batches of aligned pairs with their answers; pairs whose answers coincide are dropped.

    With ``max_pairs``, a seeded random subset of that many of the remaining pairs is kept
    (in probe order), so that the cost of a patching run does not grow with the probe set.

    Raises:
        InvalidParameterError: Unknown ``answers`` mode, or ``"label"`` without integer labels.
        ProbeSetError: Clean and corrupted prompts of different shapes.
    """
    if answers not in ANSWERS:
        raise InvalidParameterError(f"answers must be one of {ANSWERS}; got {answers!r}.")
    clean_idx, corrupt_idx = resolve_pairs(probe, pairs)
    clean_set, corrupt_set = probe.subset(clean_idx), probe.subset(corrupt_idx)
    shapes = {k: (tuple(v.shape[1:]), tuple(corrupt_set.inputs[k].shape[1:])) for k, v in clean_set.inputs.items()}
    if any(a != b for a, b in shapes.values()):
        raise ProbeSetError(f"Clean and corrupted prompts must be token-aligned; got shapes {shapes}.")
    if answers == "label":
        labels = probe.labels
        if labels is None or np.asarray(labels).dtype.kind not in "iu":
            raise InvalidParameterError(
                "answers='label' needs integer labels (class or token ids) in the probe set; "
                f"got {None if labels is None else np.asarray(labels).dtype}. Use answers='prediction'."
            )
        correct_all = torch.as_tensor(labels[clean_idx], dtype=torch.long)
        wrong_all = torch.as_tensor(labels[corrupt_idx], dtype=torch.long)
    else:
        correct_all = _predictions(model, clean_set, batch_size, device)
        wrong_all = _predictions(model, corrupt_set, batch_size, device)
    keep = (correct_all != wrong_all).numpy()
    notes = []
    if not keep.all():
        notes.append(f"{int((~keep).sum())} of {len(keep)} pairs have the same clean and corrupted answer "
                     "and were left out.")
    batches = []
    kept = np.flatnonzero(keep)
    if max_pairs is not None and len(kept) > max_pairs:
        notes.append(f"{max_pairs} of the {len(kept)} pairs were used (a seeded random subset; max_pairs=None "
                     "uses every pair).")
        kept = np.sort(np.random.default_rng(seed).choice(kept, size=max_pairs, replace=False))
    for start in range(0, len(kept), batch_size):
        sel = kept[start : start + batch_size]
        tsel = torch.as_tensor(sel)
        batches.append(PairBatch(
            clean={k: v[tsel].to(device) for k, v in clean_set.inputs.items()},
            corrupted={k: v[tsel].to(device) for k, v in corrupt_set.inputs.items()},
            correct=correct_all[tsel].to(device),
            wrong=wrong_all[tsel].to(device),
        ))
    return batches, notes


def normalized_effect_ci(
    patched: np.ndarray, source: np.ndarray, target: np.ndarray, *, n_resamples: int, seed: int,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(effect, ci_low, ci_high)`` of :func:`normalized_effect`, bootstrapping pairs jointly."""
    estimate = normalized_effect(patched, clean=source, corrupted=target)
    if not np.isfinite(estimate) or len(patched) < 3:
        return estimate, float("nan"), float("nan")

    def ratio(p: np.ndarray, s: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
        return (p.mean(axis) - t.mean(axis)) / (s.mean(axis) - t.mean(axis))

    try:
        ci = bootstrap_ci(ratio, patched, source, target, paired=True, n_resamples=n_resamples,
                          confidence=confidence, random_state=seed)
    except InvalidParameterError:  # a resample with no clean-corrupted gap
        return estimate, float("nan"), float("nan")
    return estimate, ci.low, ci.high


def _predictions(model: nn.Module, probe: ProbeSet, batch_size: int, device: torch.device | None) -> torch.Tensor:
    out = []
    for batch in probe_batches(probe, batch_size, device, trim=False, no_grad=True):
        output = forward(model, batch, positional=probe.positional)
        logits = answer_logits(logits_of(output), batch.get("attention_mask"))
        out.append(logits.argmax(dim=-1).cpu())
    return torch.cat(out)


class PairedNodeAnalysis(Analysis):
    """Shared set-up of analyses that intervene on nodes (modules or heads) over clean/corrupted pairs.

    Declares the common arguments once, and :meth:`prepare` resolves the nodes and builds the
    pair batches for a run (``ActivationPatching``, ``CircuitDiscovery``).
    """

    needs_model = True  # patches activations in extra forward passes
    probe_columns = ("pairs",)
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "pairs": [Type(str, list, tuple, label="a probe column (str) or a list of (clean, corrupted) index pairs")],
        "heads": [None, Type(str, list, tuple, label="a layer selector (str) or a list of them")],
        "n_heads": [None, Interval(int, 1, None)],
        "answers": [Options(ANSWERS)],
        "max_pairs": [None, Interval(int, 1, None)],
    }

    def __init__(
        self,
        *,
        pairs: PairsArg,
        layers: str | list[str] | None,
        heads: str | list[str] | None,
        n_heads: int | None,
        answers: Answers,
        n_resamples: int,
        confidence: float,
        nodes_role: str,
        max_pairs: int | None = None,
    ) -> None:
        super().__init__(layers=layers)
        if layers is None and heads is None:
            raise InvalidParameterError(f"{type(self).__name__}: layers and/or heads must be given (selectors of the "
                                        f"nodes {nodes_role}); got neither.")
        self.pairs: PairsArg = pairs if isinstance(pairs, str) else [(int(a), int(b)) for a, b in pairs]
        self.heads = [heads] if isinstance(heads, str) else heads
        self.n_heads = n_heads
        self.answers = answers
        self.n_resamples = n_resamples
        self.confidence = confidence
        self.max_pairs = max_pairs

    def prepare(self, ctx: AnalysisContext) -> tuple[list[Node], list[PairBatch], list[str]]:
        """The nodes to intervene on, the pair batches, and notes about pairs left out."""
        nodes = resolve_nodes(ctx.model, layers=self.layers, heads=self.heads, n_heads=self.n_heads)
        batches, notes = pair_batches(ctx.model, ctx.probe, self.pairs, answers=self.answers,
                                      batch_size=ctx.batch_size, device=ctx.device, max_pairs=self.max_pairs,
                                      seed=ctx.random_state)
        return nodes, batches, notes
