"""Bias in a representation's geometry: WEAT/SEAT effect sizes and group-centroid distances.

* :func:`weat_effect_size` and :func:`weat_test`: on embeddings ``w`` with cosine similarity ``cos``::

      s(w, A, B) = mean_{a in A} cos(w, a) - mean_{b in B} cos(w, b)
      d = (mean_{x in X} s(x, A, B) - mean_{y in Y} s(y, A, B)) / std_{w in X u Y} s(w, A, B)

  (Caliskan, Bryson & Narayanan 2017, Science 356, p. 183, "WEAT"; ``ddof=1`` as May et al.'s
  reference code), with the one-sided p-value over equal-size re-partitions of ``X u Y``. On
  sentence embeddings this is SEAT (May et al. 2019, NAACL).
* :func:`centroid_distance_test`: the largest distance between two group centroids over the pooled
  within-group root-mean-square spread, with a permutation p-value (group labels shuffled).

:class:`neuronmap.analyses.representation_bias.RepresentationBias` runs them per layer.

References:
    Caliskan, Bryson & Narayanan (2017). Semantics derived automatically from language corpora
    contain human-like biases. Science 356(6334).
    May, Wang, Bordia, Bowman & Rudinger (2019). On Measuring Social Biases in Sentence Encoders. NAACL.
    Phipson & Smyth (2010). Permutation P-values Should Never Be Zero. Stat. Appl. Genet. Mol. Biol. 9(1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["centroid_distance_test", "weat_effect_size", "weat_test"]


def _cosine(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray(an @ bn.T)


def _association(w: NDArray[np.float64], a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """``s(w, A, B)`` of Caliskan et al. (2017) for every row of ``w``."""
    return _cosine(w, a).mean(axis=1) - _cosine(w, b).mean(axis=1)


def weat_effect_size(x: Any, y: Any, a: Any, b: Any) -> float:
    """WEAT effect size ``d`` (Caliskan, Bryson & Narayanan 2017, Science 356: 183-186).

    ``d = (mean_x s(x, A, B) - mean_y s(y, A, B)) / std_{w in X u Y} s(w, A, B)`` with
    ``s(w, A, B) = mean_a cos(w, a) - mean_b cos(w, b)`` and ``ddof=1``. Positive: targets X
    sit closer to attributes A (and Y to B). Applied to sentence encodings it is SEAT
    (May et al. 2019).

    Args:
        x, y: Target embeddings ``[n_x, d]`` and ``[n_y, d]``.
        a, b: Attribute embeddings ``[n_a, d]`` and ``[n_b, d]``.

    Returns:
        The effect size (NaN when every association is equal).

    Example:
        >>> weat_effect_size([[1, 0.1], [1, 0.2]], [[0.1, 1], [0.2, 1]], [[1, 0]], [[0, 1]]) > 1
        True
    """
    x, y, a, b = (np.asarray(v, dtype=np.float64) for v in (x, y, a, b))
    s = _association(np.vstack([x, y]), a, b)
    std = float(np.std(s, ddof=1))
    return float((s[: len(x)].mean() - s[len(x) :].mean()) / std) if std > 0 else float("nan")


def weat_test(
    x: Any, y: Any, a: Any, b: Any, *, n_permutations: int = 9999, random_state: int | None = 0
) -> tuple[float, float]:
    """WEAT effect size and one-sided permutation p-value (Caliskan et al. 2017).

    The p-value is ``P(S(X_i, Y_i) >= S(X, Y))`` over random equal-size re-partitions
    ``(X_i, Y_i)`` of ``X u Y`` (the observed partition counted once, Phipson & Smyth 2010).

    Returns:
        ``(effect_size, p_value)``.
    """
    x, y, a, b = (np.asarray(v, dtype=np.float64) for v in (x, y, a, b))
    s = _association(np.vstack([x, y]), a, b)
    rng = np.random.default_rng(random_state)
    perms = rng.permuted(np.tile(np.arange(len(s)), (n_permutations, 1)), axis=1)
    observed = s[: len(x)].sum() - s[len(x) :].sum()
    null = s[perms[:, : len(x)]].sum(axis=1) - s[perms[:, len(x) :]].sum(axis=1)
    p = (1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + n_permutations)
    return weat_effect_size(x, y, a, b), float(p)


def centroid_distance_test(
    x: NDArray[np.float64], y: NDArray[np.int64], n_permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Largest standardised distance between group centroids and its permutation p-value.

    The distance is divided by the pooled within-group root-mean-square spread ``sqrt(mean_g tr(Cov_g))``,
    so it is scale free; the p-value counts the observed labelling once (Phipson & Smyth 2010).

    Args:
        x: ``[n, d]`` activations.
        y: ``[n]`` group codes ``0 .. K-1``.
        n_permutations: Shuffles of the group labels.
        rng: Source of the shuffles.

    Returns:
        ``(distance, p_value)``.
    """
    labels = np.vstack([y, rng.permuted(np.tile(y, (n_permutations, 1)), axis=1)])
    k = int(y.max()) + 1
    counts = np.bincount(y, minlength=k).astype(np.float64)
    onehot = (labels[:, :, None] == np.arange(k)).astype(np.float64)  # [P + 1, n, k]
    centroids = np.einsum("pnk,nd->pkd", onehot, x) / counts[None, :, None]
    spread = (x**2).sum(axis=1) @ onehot / counts - (centroids**2).sum(axis=2)  # tr(Cov_g) per group
    scale = np.sqrt(np.maximum(spread.mean(axis=1), 1e-24))
    gram = centroids @ centroids.transpose(0, 2, 1)  # squared distances from the Gram matrix: [P + 1, k, k]
    norms = np.diagonal(gram, axis1=1, axis2=2)
    squared = norms[:, :, None] + norms[:, None, :] - 2 * gram
    gaps = np.sqrt(np.maximum(squared, 0).max(axis=(1, 2))) / scale
    return float(gaps[0]), float((1 + np.count_nonzero(gaps[1:] >= gaps[0] - 1e-12)) / (1 + n_permutations))
