"""Private numerics behind :mod:`neuronmap.metrics.similarity`.

Every CKA variant here reduces to one quantity per pair of centred representations
``X_i`` (``n x d_i``) and ``X_j``: the dot product of their linear Gram matrices,
``P_ij = <X_i X_i^T, X_j X_j^T>_F = ||X_i^T X_j||_F^2`` (Kornblith et al. 2019, eq. 1).
It can be computed in feature space (``d_i x d_j`` products, cheap when ``n`` is large)
or in sample space (blocks of the ``n x n`` Gram matrices, cheap when ``d`` is large);
both are exact, so the cheaper one is chosen from a flop count.

The debiased estimator needs only ``P`` plus the squared row norms of the centred
representations: with ``q_i = ||x_i||^2`` (centred rows) and ``Q = sum(q)``, the
unbiased HSIC of Song et al. (2012, eq. 5) is

    n (n - 3) HSIC_1 = P - n / (n - 2) * q_x . q_y + Q_x Q_y / ((n - 1) (n - 2)),

because centring leaves the U-statistic unchanged and makes ``1^T K 1 = 0``. This is the
feature-space form of Kornblith et al.'s reference code; it equals Székely & Rizzo's
(2014, Prop. 1) inner product of U-centred matrices, so its self-similarity is a squared
norm and never negative in exact arithmetic.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from neuronmap.errors import InvalidParameterError

Form = Literal["auto", "features", "gram"]
FORMS: tuple[str, ...] = ("auto", "features", "gram")

# Bytes of Gram-matrix blocks held at once by the sample-space form: large enough that each
# block product is a full-speed GEMM (12 layers: 418 x 418 blocks), and well under glibc's
# 32 MiB mmap threshold, so that repeated calls reuse heap memory instead of page-faulting a
# fresh mapping in every call. 2 cores, 12 layers, time against numpy's x @ x.T: 96 MiB blocks
# 1.65x (n=1024, d=256) and 0.87x (n=4096, d=768); 16 MiB blocks 0.93x and 0.76x.
_BLOCK_BYTES = 16 * 2**20
_MIN_BLOCK = 256


def as_matrix(x: Any, name: str) -> NDArray[np.floating[Any]]:
    """Convert activations (numpy or torch, any device) to an ``[n, d]`` floating numpy array.

    Floating inputs keep their precision (float32 stays float32, so that the float64
    conversion can be fused with centring); others become float64. A 1-D input is one
    feature per example; inputs with more than two dimensions are flattened to
    ``[n, prod(rest)]`` (e.g. token x hidden or channel x height x width).
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        tensor = x.detach()
        if str(tensor.dtype) != "torch.float64":
            # half/bfloat16 -> float32 is exact; numpy has no bfloat16
            tensor = tensor.float() if tensor.is_floating_point() else tensor.double()
        x = tensor.cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    if arr.ndim == 0:
        raise InvalidParameterError(
            f"{name} must be an array of shape [n_examples, n_features]; got a scalar."
        )
    if arr.ndim == 1:
        return arr[:, None]
    return arr.reshape(arr.shape[0], -1) if arr.ndim > 2 else arr


def _raise_if_not_finite(arr: NDArray[np.floating[Any]], name: str) -> None:
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise InvalidParameterError(
            f"{name} must contain only finite values; got {bad} NaN or infinite entries "
            f"in an array of shape {arr.shape}."
        )


def as_float64_matrix(x: Any, name: str) -> NDArray[np.float64]:
    """:func:`as_matrix`, as float64, checked for NaN and infinity."""
    arr = np.asarray(as_matrix(x, name), dtype=np.float64)
    _raise_if_not_finite(arr, name)
    return arr


def centered(x: Any, name: str) -> NDArray[np.float64]:
    """Column-centred float64 copy of ``x``, checked for NaN and infinity; never modifies ``x``.

    Conversion and centring happen in one pass over the data (``np.subtract`` with a
    float64 output), and the finiteness check rides on the column means (a NaN or
    infinity makes its column mean non-finite), so a float32 layer is read twice
    instead of five times.
    """
    arr = as_matrix(x, name)
    mean = arr.mean(axis=0, dtype=np.float64, keepdims=True)
    if not np.isfinite(mean).all():
        _raise_if_not_finite(arr, name)
    return np.subtract(arr, mean, dtype=np.float64)


def check_form(form: str) -> None:
    """Raise unless ``form`` is one of :data:`FORMS`."""
    if form not in FORMS:
        raise InvalidParameterError(f"form must be one of {FORMS}; got {form!r}.")


def check_same_n(arrays: Sequence[NDArray[np.float64]], names: Sequence[str]) -> int:
    """Return the common number of examples, or raise naming every length."""
    lengths = {name: a.shape[0] for name, a in zip(names, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise InvalidParameterError(
            f"All representations must have the same number of examples (rows); got {listed}."
        )
    return next(iter(lengths.values()))


def check_min_n(n: int, *, debiased: bool) -> None:
    """CKA needs two examples; the unbiased HSIC divides by ``n - 3``, so it needs four."""
    needed = 4 if debiased else 2
    if n < needed:
        kind = "debiased CKA (unbiased HSIC divides by n - 3)" if debiased else "CKA"
        raise InvalidParameterError(f"{kind} needs at least {needed} examples; got n={n}.")


def prefer_gram(n: int, dims: Sequence[int], pairs: Sequence[tuple[int, int]]) -> bool:
    """Whether the sample-space form executes fewer flops than the feature-space form.

    Feature space: one ``[d_i, n] @ [n, d_j]`` GEMM per needed pair (``2 n d_i d_j``
    flops, half that as SYRK when ``i == j``). Sample space: each layer's Gram matrix in
    symmetric blocks (about ``n^2 d_i``) plus the blocks' inner products (about
    ``n^2 L (L + 1) / 2``).
    """
    feature = sum(n * dims[i] * dims[j] * (1.0 if i == j else 2.0) for i, j in pairs)
    gram = float(n) * n * (sum(dims) + len(dims) * (len(dims) + 1) / 2.0)
    return gram < feature


def products_features(
    xs: Sequence[NDArray[np.float64]], pairs: Sequence[tuple[int, int]]
) -> NDArray[np.float64]:
    """``P_ij = ||X_i^T X_j||_F^2`` for the requested pairs (others are NaN), feature space."""
    out = np.full((len(xs), len(xs)), np.nan)
    for i, j in pairs:
        cross = xs[i].T @ xs[j]  # d_i x d_j; numpy uses SYRK when i == j
        out[i, j] = out[j, i] = float(np.vdot(cross, cross))
    return out


def block_size(n: int, n_layers: int, budget: int | None = None) -> int:
    """Side of the square Gram blocks that :func:`products_gram` holds ``n_layers`` of at once
    in ``budget`` bytes (default :data:`_BLOCK_BYTES`), at least :data:`_MIN_BLOCK`, at most ``n``."""
    fitting = int(np.sqrt((_BLOCK_BYTES if budget is None else budget) / (8 * n_layers)))
    return min(n, max(_MIN_BLOCK, fitting))


def products_gram(xs: Sequence[NDArray[np.float64]]) -> NDArray[np.float64]:
    """``P_ij = <K_i, K_j>_F`` for all pairs, from blocks of the Gram matrices ``K_i = X_i X_i^T``.

    Only block rows ``r <= c`` are formed (the Gram matrices are symmetric; off-diagonal
    blocks count twice), and the ``L`` blocks of one position are multiplied together in a
    single ``[L, b*b] @ [b*b, L]`` product, so all the work is GEMM and memory stays at
    ``L * b^2`` doubles instead of ``L * n^2``.
    """
    n_layers, n = len(xs), xs[0].shape[0]
    block = block_size(n, n_layers)
    flat = np.empty(n_layers * block * block)
    out = np.zeros((n_layers, n_layers))
    starts = range(0, n, block)
    for r0 in starts:
        r1 = min(r0 + block, n)
        for c0 in starts:
            if c0 < r0:
                continue
            c1 = min(c0 + block, n)
            grams = flat[: n_layers * (r1 - r0) * (c1 - c0)].reshape(n_layers, r1 - r0, c1 - c0)
            for k, x in enumerate(xs):
                np.matmul(x[r0:r1], x[c0:c1].T, out=grams[k])
            stacked = grams.reshape(n_layers, -1)
            weight = 1.0 if r0 == c0 else 2.0
            out += weight * (stacked @ stacked.T)
    return out


def row_sq_norms(xs: Sequence[NDArray[np.float64]]) -> NDArray[np.float64]:
    """``q[k, i] = ||x_i||^2`` for each centred representation ``k`` (shape ``[L, n]``)."""
    return np.stack([np.einsum("ij,ij->i", x, x) for x in xs])


def debias(products: NDArray[np.float64], q: NDArray[np.float64]) -> NDArray[np.float64]:
    """Turn ``P`` into ``n (n - 3)`` times the unbiased HSIC of Song et al. 2012 (module doc)."""
    n = q.shape[1]
    total = q.sum(axis=1)
    return products - (n / (n - 2.0)) * (q @ q.T) + np.outer(total, total) / ((n - 1.0) * (n - 2.0))


def hsic_products(
    xs: Sequence[NDArray[np.float64]],
    pairs: Sequence[tuple[int, int]],
    *,
    debiased: bool,
    form: Form,
) -> NDArray[np.float64]:
    """Scaled HSIC for centred ``xs``: ``P`` (biased) or ``n (n - 3) HSIC_1`` (debiased).

    Self-similarities (the diagonal) are always included; entries outside ``pairs`` may be NaN.
    """
    n = xs[0].shape[0]
    all_pairs = sorted(set(pairs) | {(k, k) for k in range(len(xs))})
    use_gram = form == "gram" or (
        form == "auto" and prefer_gram(n, [x.shape[1] for x in xs], all_pairs)
    )
    products = products_gram(xs) if use_gram else products_features(xs, all_pairs)
    if debiased:
        products = debias(products, row_sq_norms(xs))
    return products


def cka_from_products(
    products: NDArray[np.float64], rows: Sequence[int], cols: Sequence[int], names: Sequence[str]
) -> NDArray[np.float64]:
    """Normalise HSIC values to CKA (Kornblith et al. 2019, eq. 3) for ``rows x cols``.

    A self-similarity that is not positive means the representation has no variance (or,
    for the debiased estimator, rounding pushed a zero below it): CKA is undefined there,
    so it is NaN and a :class:`RuntimeWarning` names the representation.
    """
    diag = np.clip(np.diag(products), 0.0, None)
    degenerate = [names[k] for k in sorted(set(rows) | set(cols)) if not diag[k] > 0.0]
    if degenerate:
        warnings.warn(
            f"CKA is undefined for representations with zero variance: {degenerate}; "
            "their entries are NaN.",
            RuntimeWarning,
            stacklevel=3,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.sqrt(np.outer(diag[list(rows)], diag[list(cols)]))
        sub = products[np.ix_(list(rows), list(cols))]
        result = np.where(norm > 0.0, sub / norm, np.nan)
    return np.asarray(result, dtype=np.float64)


def center_gram(k: NDArray[np.float64]) -> NDArray[np.float64]:
    """``H K H`` with ``H = I - 11^T / n``, without forming ``H``."""
    row = k.mean(axis=0)
    return k - row[None, :] - row[:, None] + row.mean()


def hsic_gram(k_x: NDArray[np.float64], k_y: NDArray[np.float64], *, debiased: bool) -> float:
    """HSIC of two Gram matrices, up to a factor that cancels in CKA.

    Biased: ``tr(K H L H)`` (Kornblith et al. 2019, eq. 2, times ``(n - 1)^2``).
    Debiased: ``n (n - 3)`` times Song et al.'s (2012, eq. 5) unbiased estimator,
    ``tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1``, where ``K~``
    is ``K`` with its diagonal set to zero.
    """
    if not debiased:
        return float(np.vdot(center_gram(k_x), center_gram(k_y)))
    n = k_x.shape[0]
    kt, lt = k_x.copy(), k_y.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    ks, ls = kt.sum(axis=0), lt.sum(axis=0)
    return float(
        np.vdot(kt, lt)
        + ks.sum() * ls.sum() / ((n - 1.0) * (n - 2.0))
        - 2.0 / (n - 2.0) * float(ks @ ls)
    )
