"""Effect sizes of interventions: logit differences, patching effects, indirect effects.

Pure functions on arrays. They define the numbers reported by
:class:`~neuronmap.analyses.causal_tracing.CausalTracing`,
:class:`~neuronmap.analyses.patching.ActivationPatching` and
:class:`~neuronmap.analyses.circuits.CircuitDiscovery`.

References:
    Meng, Bau, Andonian & Belinkov (2022). Locating and Editing Factual Associations in
    GPT. NeurIPS (section 2.1: total and indirect effects).
    Wang, Variengien, Conmy, Shlegeris & Steinhardt (2022). Interpretability in the Wild:
    a Circuit for Indirect Object Identification in GPT-2 small. arXiv:2211.00593
    (section 3: logit difference).
    Nanda (2023). Attribution Patching: Activation Patching At Industrial Scale.
    Syed, Rager & Conmy (2023). Attribution Patching Outperforms Automated Circuit
    Discovery. arXiv:2310.10348 (eq. 1).
    Zhang & Nanda (2024). Towards Best Practices of Activation Patching in Language
    Models: Metrics and Methods. ICLR (section 2, normalised logit difference).
"""

from __future__ import annotations

import numpy as np
import scipy.stats
import torch
from numpy.typing import ArrayLike, NDArray

from neuronmap.errors import InvalidParameterError

__all__ = [
    "attribution_patching_effect",
    "indirect_effect",
    "logit_difference",
    "normalized_effect",
    "rank_agreement",
    "target_probability",
]


def logit_difference(
    logits: torch.Tensor, correct: torch.Tensor, wrong: torch.Tensor
) -> torch.Tensor:
    """Logit of the correct answer minus the logit of the wrong one, per example.

    ``LD = logit[correct] - logit[wrong]`` (Wang et al. 2022, section 3). It is invariant to
    adding a constant to every logit, unlike the probability of the answer.

    Args:
        logits: ``[batch, classes]``.
        correct: ``[batch]`` class indices of the clean answer.
        wrong: ``[batch]`` class indices of the corrupted answer.

    Returns:
        ``[batch]`` (differentiable, for attribution patching).
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, correct.to(logits.device)] - logits[rows, wrong.to(logits.device)]


def target_probability(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Softmax probability of ``target`` per example, ``P[o]`` of Meng et al. (2022, sec. 2.1).

    Args:
        logits: ``[batch, classes]``.
        target: ``[batch]`` class indices.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    return probs[torch.arange(logits.shape[0], device=logits.device), target.to(logits.device)]


def normalized_effect(patched: ArrayLike, *, clean: ArrayLike, corrupted: ArrayLike) -> float:
    """Share of the clean-corrupted gap a patch recovers, on means over examples.

    ``(mean(patched) - mean(corrupted)) / (mean(clean) - mean(corrupted))``: 0 when the
    patch changes nothing, 1 when it restores clean behaviour (Wang et al. 2022, sec. 3;
    Zhang & Nanda 2024, sec. 2). Means are taken before the ratio so pairs whose own gap
    is near zero cannot blow the estimate up.

    Returns:
        The normalised effect; NaN when the clean and corrupted means coincide.
    """
    base = float(np.mean(np.asarray(corrupted, dtype=np.float64)))
    gap = float(np.mean(np.asarray(clean, dtype=np.float64))) - base
    if abs(gap) < 1e-12:
        return float("nan")
    return (float(np.mean(np.asarray(patched, dtype=np.float64))) - base) / gap


def indirect_effect(restored: ArrayLike, corrupted: ArrayLike) -> NDArray[np.float64]:
    """Indirect effect of one restored state, per example (Meng et al. 2022, section 2.1).

    ``IE = P*_{clean h_i^(l)}[o] - P*[o]``: the target probability in the corrupted run with
    hidden state ``h_i^(l)`` restored to its clean value, minus that of the corrupted run.
    The total effect is the same formula with the clean probability for ``restored``.
    """
    return np.asarray(restored, dtype=np.float64) - np.asarray(corrupted, dtype=np.float64)


def attribution_patching_effect(
    delta: torch.Tensor, grad: torch.Tensor, *, sum_dims: int = 1
) -> torch.Tensor:
    """First-order estimate of an activation patch's effect on a metric.

    ``m(a + delta) - m(a) ~= delta . dm/da`` (Nanda 2023; Syed et al. 2023, eq. 1), where
    ``delta = a_source - a_target`` is the patch and the gradient is taken in the run being
    patched. One forward and one backward pass estimate the effect of every patch at once.

    Args:
        delta: Patch ``[batch, ..., features]``.
        grad: Gradient of the metric with respect to the activation, same shape.
        sum_dims: Trailing axes to contract (1: features only, keeping positions; use
            ``delta.ndim - 1`` for the effect of patching the whole activation).

    Returns:
        ``delta.shape[:-sum_dims]``.
    """
    if delta.shape != grad.shape:
        raise InvalidParameterError(
            f"delta and grad must have the same shape; got {tuple(delta.shape)} and {tuple(grad.shape)}."
        )
    if not 1 <= sum_dims < delta.ndim:
        raise InvalidParameterError(f"sum_dims must be in [1, {delta.ndim - 1}]; got {sum_dims}.")
    return (delta * grad).sum(dim=tuple(range(-sum_dims, 0)))


def rank_agreement(exact: ArrayLike, approx: ArrayLike) -> dict[str, float]:
    """Pearson and Spearman correlation between exact and approximate effects.

    How far attribution patching can stand in for activation patching (Syed et al. 2023,
    section 4 report the same two numbers). Non-finite pairs are dropped.

    Returns:
        ``{"pearson": r, "spearman": rho}``; NaN when fewer than 3 pairs or a constant input.
    """
    x = np.asarray(exact, dtype=np.float64).ravel()
    y = np.asarray(approx, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise InvalidParameterError(
            f"exact and approx must have the same size; got {x.size} and {y.size}."
        )
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {
        "pearson": float(scipy.stats.pearsonr(x, y).statistic),
        "spearman": float(scipy.stats.spearmanr(x, y).statistic),
    }
