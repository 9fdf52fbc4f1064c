"""Representational similarity analysis: dissimilarity matrices and their comparison.

An RDM (representational dissimilarity matrix, Kriegeskorte, Mur & Bandettini 2008)
holds the dissimilarity of every pair of examples (or conditions) in one representation.
Two representations are compared by correlating the upper triangles of their RDMs;
significance comes from a Mantel permutation test (Mantel 1967) that relabels the
examples of one RDM, permuting its rows and columns together, because the entries of an
RDM are not exchangeable one by one.

RDMs are passed around in scipy's *condensed* form (the upper triangle, row by row, as
returned by :func:`scipy.spatial.distance.pdist`), which is what the correlation uses;
:func:`rdm` returns the square form on request and :func:`rsa` accepts either.

References:
    Kriegeskorte, Mur & Bandettini (2008). Representational similarity analysis -
    connecting the branches of systems neuroscience. Front. Syst. Neurosci. 2:4.
    Mantel (1967). The detection of disease clustering and a generalized regression
    approach. Cancer Research 27(2).
    Phipson & Smyth (2010). Permutation p-values should never be zero. Stat. Appl.
    Genet. Mol. Biol. 9(1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.distance import pdist, squareform
from scipy.stats import kendalltau, rankdata

from neuronmap.errors import InvalidParameterError
from neuronmap.metrics._cka import as_float64_matrix

__all__ = ["RSAResult", "rdm", "rsa"]

Metric = Literal["correlation", "euclidean", "cosine"]
Method = Literal["spearman", "kendall", "pearson"]
Alternative = Literal["greater", "less", "two-sided"]
_METRICS = ("correlation", "euclidean", "cosine")
_METHODS = ("spearman", "kendall", "pearson")
_ALTERNATIVES = ("greater", "less", "two-sided")
# Permutations handled per vectorised chunk: keeps the index array near 32 MB.
_CHUNK_ENTRIES = 4_000_000


@dataclass(frozen=True)
class RSAResult:
    """Outcome of :func:`rsa`."""

    statistic: float
    """Correlation between the two condensed RDMs."""
    pvalue: float
    """Mantel permutation p-value, ``(1 + #{null at least as extreme}) / (1 + n_permutations)``;
    NaN when ``n_permutations == 0``."""
    n_permutations: int
    """Size of the null distribution."""
    method: str
    """``"spearman"``, ``"kendall"`` or ``"pearson"``."""
    alternative: str
    """Direction of the test."""


def rdm(X: Any, metric: Metric = "correlation", *, square: bool = False) -> NDArray[np.float64]:
    """Representational dissimilarity matrix of ``X`` (Kriegeskorte et al. 2008).

    Args:
        X: Activations ``[n, d]`` (numpy or torch), one row per example or condition.
        metric: ``"correlation"`` (1 - Pearson r between rows, the usual RSA choice),
            ``"euclidean"`` or ``"cosine"`` (1 - cosine similarity), via
            :func:`scipy.spatial.distance.pdist`.
        square: Return the symmetric ``[n, n]`` matrix instead of the condensed vector of
            length ``n (n - 1) / 2``.

    Returns:
        The condensed (default) or square RDM, float64.

    Raises:
        InvalidParameterError: Unknown metric, fewer than 2 rows, or rows for which the
            metric is undefined (constant rows for correlation, zero rows for cosine).

    Example:
        >>> rdm(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]), "euclidean")
        array([5.        , 1.        , 4.24264069])
    """
    if metric not in _METRICS:
        raise InvalidParameterError(f"metric must be one of {_METRICS}; got {metric!r}.")
    x = as_float64_matrix(X, "X")
    if x.shape[0] < 2:
        raise InvalidParameterError(f"An RDM needs at least 2 rows; got {x.shape[0]}.")
    if metric != "euclidean":
        spread = np.ptp(x, axis=1) if metric == "correlation" else np.abs(x).max(axis=1)
        bad = np.flatnonzero(spread == 0)
        if bad.size:
            what = "constant" if metric == "correlation" else "all-zero"
            raise InvalidParameterError(
                f"The {metric} distance is undefined for {what} rows; got {bad.size} such "
                f"rows (first: {bad[:5].tolist()}). Use metric='euclidean' or drop them."
            )
    condensed = pdist(x, metric=metric)
    return np.asarray(squareform(condensed) if square else condensed, dtype=np.float64)


def _condensed(rdm_: Any, name: str) -> tuple[NDArray[np.float64], int]:
    arr = np.asarray(rdm_, dtype=np.float64)
    if arr.ndim == 2:
        if arr.shape[0] != arr.shape[1]:
            raise InvalidParameterError(
                f"{name} must be square or condensed; got shape {arr.shape}."
            )
        if not np.allclose(arr, arr.T, rtol=1e-10, atol=1e-12) or np.any(np.diag(arr) != 0):
            raise InvalidParameterError(f"{name} must be symmetric with a zero diagonal.")
        arr = squareform(arr, checks=False)
    elif arr.ndim != 1:
        raise InvalidParameterError(
            f"{name} must be a condensed (1-D) or square (2-D) RDM; got {arr.ndim}-D."
        )
    n = round((1 + np.sqrt(1 + 8 * arr.size)) / 2)
    if n * (n - 1) // 2 != arr.size or n < 3:
        raise InvalidParameterError(
            f"{name} has {arr.size} entries, which is not n (n - 1) / 2 for any n >= 3."
        )
    if not np.isfinite(arr).all():
        raise InvalidParameterError(f"{name} must contain only finite values.")
    return arr, n


def _standardise(v: NDArray[np.float64]) -> NDArray[np.float64]:
    centred = v - v.mean()
    return centred / np.linalg.norm(centred)


def rsa(
    rdm_a: Any,
    rdm_b: Any,
    *,
    method: Method = "spearman",
    n_permutations: int = 1000,
    alternative: Alternative = "greater",
    random_state: int | np.random.Generator | None = None,
) -> RSAResult:
    """Compare two RDMs by rank (or linear) correlation with a Mantel permutation test.

    The statistic is the correlation of the condensed RDMs (Kriegeskorte et al. 2008,
    Spearman by default, as it assumes no linear relation between dissimilarity scales).
    The null distribution relabels the examples of ``rdm_a``: each permutation permutes
    its rows and columns together (Mantel 1967). For Spearman and Pearson the permuted
    correlations are computed in vectorised chunks from precomputed ranks; Kendall's tau
    calls :func:`scipy.stats.kendalltau` once per permutation and is slower.

    Args:
        rdm_a: Condensed or square RDM.
        rdm_b: RDM of the same examples.
        method: ``"spearman"``, ``"kendall"`` or ``"pearson"``.
        n_permutations: Number of random relabellings; 0 skips the test (p-value NaN).
        alternative: ``"greater"`` (more similar than chance, the usual RSA question),
            ``"less"`` or ``"two-sided"`` (on the absolute correlation).
        random_state: Seed or generator for the permutations.

    Returns:
        :class:`RSAResult` with the statistic and the permutation p-value (never 0; see
        Phipson & Smyth 2010).

    Raises:
        InvalidParameterError: Malformed or constant RDMs, RDMs of different sizes, or
            unknown options.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(20, 5))
        >>> res = rsa(rdm(x), rdm(x + 0.1 * rng.normal(size=x.shape)), random_state=0)
        >>> res.statistic > 0.9, res.pvalue < 0.01
        (True, True)
    """
    if method not in _METHODS:
        raise InvalidParameterError(f"method must be one of {_METHODS}; got {method!r}.")
    if alternative not in _ALTERNATIVES:
        raise InvalidParameterError(
            f"alternative must be one of {_ALTERNATIVES}; got {alternative!r}."
        )
    if (
        isinstance(n_permutations, bool)
        or not isinstance(n_permutations, (int, np.integer))
        or n_permutations < 0
    ):
        raise InvalidParameterError(
            f"n_permutations must be a non-negative integer; got {n_permutations!r}."
        )
    a, n_a = _condensed(rdm_a, "rdm_a")
    b, n_b = _condensed(rdm_b, "rdm_b")
    if n_a != n_b:
        raise InvalidParameterError(
            f"The RDMs describe different numbers of examples: {n_a} and {n_b}."
        )
    for v, name in ((a, "rdm_a"), (b, "rdm_b")):
        if np.ptp(v) == 0:
            raise InvalidParameterError(f"{name} is constant, so its correlation is undefined.")
    rng = np.random.default_rng(random_state)
    if method == "kendall":
        observed = float(kendalltau(a, b).statistic)
        null = _kendall_null(a, b, n_a, int(n_permutations), rng)
    else:
        transform = rankdata if method == "spearman" else np.asarray
        za = _standardise(np.asarray(transform(a), dtype=np.float64))
        zb = _standardise(np.asarray(transform(b), dtype=np.float64))
        observed = float(za @ zb)
        null = _linear_null(za, zb, n_a, int(n_permutations), rng)
    return RSAResult(
        statistic=observed,
        pvalue=_pvalue(observed, null, alternative),
        n_permutations=int(n_permutations),
        method=method,
        alternative=alternative,
    )


def _permuted_indices(n: int, count: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """Condensed-entry indices of ``count`` random relabellings of ``n`` examples."""
    index = squareform(np.arange(n * (n - 1) // 2, dtype=np.float64), checks=False).astype(np.intp)
    rows, cols = np.triu_indices(n, k=1)
    perms = rng.permuted(np.tile(np.arange(n), (count, 1)), axis=1)
    return np.asarray(index[perms[:, rows], perms[:, cols]], dtype=np.intp)


def _linear_null(
    za: NDArray[np.float64], zb: NDArray[np.float64], n: int, count: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    chunk = max(1, _CHUNK_ENTRIES // za.size)
    parts = [
        za[_permuted_indices(n, min(chunk, count - start), rng)] @ zb
        for start in range(0, count, chunk)
    ]
    return np.concatenate(parts) if parts else np.empty(0)


def _kendall_null(
    a: NDArray[np.float64], b: NDArray[np.float64], n: int, count: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    chunk = max(1, _CHUNK_ENTRIES // a.size)
    null = np.empty(count)
    for start in range(0, count, chunk):
        idx = _permuted_indices(n, min(chunk, count - start), rng)
        for k, row in enumerate(idx):
            null[start + k] = kendalltau(a[row], b).statistic
    return null


def _pvalue(observed: float, null: NDArray[np.float64], alternative: str) -> float:
    if null.size == 0:
        return float("nan")
    # tolerance as in scipy.stats.permutation_test: a relabelling that reproduces the
    # observed value up to rounding must count as "at least as extreme"
    tol = 1e-12 * max(1.0, abs(observed))
    if alternative == "greater":
        hits = np.count_nonzero(null >= observed - tol)
    elif alternative == "less":
        hits = np.count_nonzero(null <= observed + tol)
    else:
        hits = np.count_nonzero(np.abs(null) >= abs(observed) - tol)
    return float((1 + hits) / (1 + null.size))
