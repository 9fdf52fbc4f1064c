"""Per-layer activation statistics: health of units and the dimensionality of a representation."""

from __future__ import annotations

import numpy as np

__all__ = ["activation_summary", "dead_fraction", "nonfinite_fraction", "participation_ratio", "sparsity"]


def nonfinite_fraction(acts: np.ndarray) -> float:
    """Fraction of entries that are NaN or +-Inf."""
    acts = np.asarray(acts)
    return float(1.0 - np.isfinite(acts).mean()) if acts.size else 0.0


def dead_fraction(acts: np.ndarray, *, threshold: float = 0.0) -> float:
    """Fraction of units never active on the probe set: ``max_i a_ij <= threshold``.

    For ReLU-family layers this is the classic dead-ReLU count (Lu et al. 2019, "Dying ReLU and
    Initialization"); non-finite values are ignored.

    Args:
        acts: ``[n, d]`` activations.
        threshold: A unit is active on an example when its activation exceeds this.
    """
    acts = np.asarray(acts, dtype=np.float64)
    masked = np.where(np.isfinite(acts), acts, -np.inf)
    return float((masked.max(axis=0) <= threshold).mean())


def sparsity(acts: np.ndarray, *, eps: float = 1e-6) -> float:
    """Fraction of (finite) entries whose magnitude is at most ``eps`` (the L0 sparsity)."""
    acts = np.asarray(acts, dtype=np.float64)
    finite = np.isfinite(acts)
    return float((np.abs(acts[finite]) <= eps).mean()) if finite.any() else float("nan")


def participation_ratio(acts: np.ndarray) -> float:
    """Effective rank as the participation ratio of the covariance spectrum.

    ``PR = (sum_k lambda_k)^2 / sum_k lambda_k^2`` (Gao et al. 2017, "A theory of multineuronal
    dimensionality", eq. 2; Recanatesi et al. 2022). It is 1 for a rank-one representation and
    ``d`` for an isotropic one. Computed from the singular values of the centred data
    (``lambda_k = s_k^2 / (n - 1)``), rows with non-finite values dropped.
    """
    acts = np.asarray(acts, dtype=np.float64)
    acts = acts[np.isfinite(acts).all(axis=1)]
    if acts.shape[0] < 2:
        return float("nan")
    centred = acts - acts.mean(axis=0)
    eig = np.linalg.svd(centred, compute_uv=False) ** 2
    total = eig.sum()
    return float(total**2 / (eig**2).sum()) if total > 0 else 0.0


def activation_summary(acts: np.ndarray, *, dead_threshold: float = 0.0, eps: float = 1e-6) -> dict[str, float]:
    """Mean, std, dead/non-finite fractions, sparsity and effective rank of ``[n, d]`` activations."""
    acts = np.asarray(acts, dtype=np.float64)
    if acts.ndim > 2:
        acts = acts.reshape(acts.shape[0], -1)
    finite = acts[np.isfinite(acts)]
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std()) if finite.size else float("nan"),
        "dead_fraction": dead_fraction(acts, threshold=dead_threshold),
        "nonfinite_fraction": nonfinite_fraction(acts),
        "sparsity": sparsity(acts, eps=eps),
        "effective_rank": participation_ratio(acts),
    }
