"""Representational similarity: centred kernel alignment (CKA) and RSA.

Activations are ``[n, d]`` arrays with one row per probe example, as numpy arrays or
torch tensors on any device (converted to float64 numpy on the CPU; inputs with more
than two dimensions are flattened to ``[n, -1]``). Everything is computed in float64.

CKA (Kornblith et al. 2019) compares two representations of the same examples through
their Gram matrices: ``CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` (eq. 3)
with ``HSIC(K, L) = tr(K H L H) / (n - 1)^2`` (eq. 2). The default, biased HSIC makes
CKA of unrelated representations drift upwards when ``d`` is large relative to ``n``;
``debiased=True`` uses the unbiased HSIC of Song et al. (2012, eq. 5) instead, as
recommended by Nguyen et al. (2021, Sec. 3.1). Debiased CKA is a ratio of unbiased
estimates: it is near 0 for independent representations and may be slightly negative.

A representation with zero variance (a dead layer) has no defined CKA: its entries are
NaN and a :class:`RuntimeWarning` names it.

RSA lives in :mod:`neuronmap.metrics.rsa` and is re-exported here.

References:
    Kornblith, Norouzi, Lee & Hinton (2019). Similarity of Neural Network Representations
    Revisited. ICML.
    Song, Smola, Gretton, Bedo & Borgwardt (2012). Feature Selection via Dependence
    Maximization. JMLR 13.
    Nguyen, Raghu & Kornblith (2021). Do Wide and Deep Networks Learn the Same Things?
    ICLR.
    Chan, Golub & LeVeque (1979). Updating formulae and a pairwise algorithm for computing
    sample variances. Stanford CS report STAN-CS-79-773.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.spatial.distance import pdist, squareform

from neuronmap.errors import InvalidParameterError, NeuronMapError
from neuronmap.metrics import _cka
from neuronmap.metrics._cka import Form
from neuronmap.metrics.rsa import RSAResult, rdm, rsa

__all__ = [
    "CKAAccumulator",
    "RSAResult",
    "cka_matrix",
    "kernel_cka",
    "linear_cka",
    "rdm",
    "rsa",
]

Kernel = Literal["rbf", "linear"]
Estimator = Literal["exact", "minibatch"]
_KERNELS = ("rbf", "linear")
_ESTIMATORS = ("exact", "minibatch")


def linear_cka(
    X: Any, Y: Any, *, debiased: bool = False, form: Form = "auto", device: Any = None
) -> float:
    """Linear CKA between two representations of the same ``n`` examples.

    ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` for column-centred ``X_c``,
    ``Y_c`` (Kornblith et al. 2019, eq. 1 and Table 1); with ``debiased=True`` each HSIC
    is replaced by the unbiased estimator of Song et al. (2012, eq. 5).

    Args:
        X: Activations ``[n, d1]`` (numpy or torch).
        Y: Activations ``[n, d2]`` of the same examples.
        debiased: Use the unbiased HSIC estimator (needs ``n >= 4``).
        form: ``"features"`` works with ``d x d`` cross-covariances, ``"gram"`` with
            ``n x n`` Gram matrices (in blocks, so memory stays bounded); both are exact.
            ``"auto"`` picks the one with fewer flops, i.e. features when ``n`` exceeds
            about 1.5 times the width.
        device: ``None`` computes with numpy on the CPU; a torch device computes there,
            as in :func:`cka_matrix`.

    Returns:
        CKA in ``[0, 1]`` (debiased: in ``[-1, 1]``); NaN with a warning if either
        representation has zero variance.

    Raises:
        InvalidParameterError: Different numbers of examples, non-finite values, too few
            examples, or an unknown ``form``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(100, 10))
        >>> round(linear_cka(X, 3.0 * X @ np.linalg.qr(rng.normal(size=(10, 10)))[0]), 6)
        1.0
    """
    _cka.check_form(form)
    xs, hsic_products = _centered_on([X, Y], ["X", "Y"], device)
    n = _cka.check_same_n(xs, ["X", "Y"])
    _cka.check_min_n(n, debiased=debiased)
    products = hsic_products(xs, [(0, 1)], debiased=debiased, form=form)
    return float(_cka.cka_from_products(products, [0], [1], ["X", "Y"])[0, 0])


def kernel_cka(
    X: Any,
    Y: Any,
    *,
    kernel: Kernel = "rbf",
    sigma: float | Literal["median_offdiag", "median_kornblith"] | None = None,
    debiased: bool = False,
) -> float:
    """CKA with a Gaussian RBF or linear kernel (Kornblith et al. 2019, eqs. 2-3).

    The RBF kernel is ``k(x, x') = exp(-||x - x'||^2 / (2 sigma^2))``. Works with full
    ``n x n`` Gram matrices, so memory is ``O(n^2)``; use :func:`linear_cka` for the
    linear kernel on large ``n``.

    Args:
        X: Activations ``[n, d1]`` (numpy or torch).
        Y: Activations ``[n, d2]`` of the same examples.
        kernel: ``"rbf"`` or ``"linear"``.
        sigma: RBF bandwidth used for both representations, or a median heuristic applied to
            each representation separately. ``None`` or ``"median_offdiag"``: ``sigma^2`` is
            the median of the non-zero squared pairwise distances. ``"median_kornblith"``:
            the median over the full ``n x n`` matrix of squared distances, zero diagonal
            included, as ``gram_rbf(x, threshold=1.0)`` in Kornblith et al.'s notebook; it is
            smaller (the ``n`` zeros pull the median down), noticeably so for small ``n``.
        debiased: Use the unbiased HSIC of Song et al. (2012, eq. 5); needs ``n >= 4``.

    Returns:
        Kernel CKA; NaN with a warning if a kernel matrix is constant after centring.

    Raises:
        InvalidParameterError: Unknown kernel, non-positive sigma, or the input errors of
            :func:`linear_cka`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(50, 4))
        >>> round(kernel_cka(X, X + 5.0), 6)
        1.0
    """
    if kernel not in _KERNELS:
        raise InvalidParameterError(f"kernel must be one of {_KERNELS}; got {kernel!r}.")
    if isinstance(sigma, str):
        if sigma not in _SIGMA_RULES:
            raise InvalidParameterError(
                f"sigma must be a positive number, None or one of {_SIGMA_RULES}; got {sigma!r}."
            )
    elif sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise InvalidParameterError(
            f"sigma must be a positive number, None or one of {_SIGMA_RULES}; got {sigma!r}."
        )
    x, y = _cka.as_float64_matrix(X, "X"), _cka.as_float64_matrix(Y, "Y")
    n = _cka.check_same_n([x, y], ["X", "Y"])
    _cka.check_min_n(n, debiased=debiased)
    k_x, k_y = _kernel_matrix(x, kernel, sigma), _kernel_matrix(y, kernel, sigma)
    products = np.array(
        [
            [
                _cka.hsic_gram(k_x, k_x, debiased=debiased),
                _cka.hsic_gram(k_x, k_y, debiased=debiased),
            ],
            [np.nan, _cka.hsic_gram(k_y, k_y, debiased=debiased)],
        ]
    )
    return float(_cka.cka_from_products(products, [0], [1], ["X", "Y"])[0, 0])


_SIGMA_RULES = ("median_offdiag", "median_kornblith")


def _kernel_matrix(x: NDArray[np.float64], kernel: str, sigma: float | str | None) -> NDArray[np.float64]:
    if kernel == "linear":
        xc = x - x.mean(axis=0)
        return xc @ xc.T
    sq = pdist(x, metric="sqeuclidean")
    if sigma == "median_kornblith":
        # median of the square matrix: n zeros on the diagonal and every off-diagonal entry twice
        sigma_sq = float(np.median(np.concatenate([sq, sq, np.zeros(x.shape[0])])))
        sigma_sq = sigma_sq if sigma_sq > 0 else 1.0
    elif sigma is None or sigma == "median_offdiag":
        positive = sq[sq > 0]
        # all points identical: any bandwidth gives a constant kernel, which CKA reports as NaN
        sigma_sq = float(np.median(positive)) if positive.size else 1.0
    else:
        sigma_sq = float(sigma) ** 2
    gram = squareform(np.exp(-sq / (2.0 * sigma_sq)))
    np.fill_diagonal(gram, 1.0)
    return np.asarray(gram, dtype=np.float64)


@dataclass(frozen=True)
class _Layout:
    """How a call's representations map onto one list and onto the output's rows/columns."""

    names: list[str]
    rows: list[int]
    cols: list[int]
    pairs: list[tuple[int, int]]
    row_labels: list[Any] | None
    col_labels: list[Any] | None
    kind: Literal["pair", "within", "cross"]


def _centered_on(arrays: Sequence[Any], names: Sequence[str], device: Any) -> tuple[list[Any], Any]:
    """Centred copies of ``arrays`` (numpy, or torch on ``device``) and the matching HSIC routine."""
    if device is None:
        return [_cka.centered(a, name) for a, name in zip(arrays, names, strict=True)], _cka.hsic_products
    from neuronmap.metrics import _cka_torch  # torch is imported only when a device is asked for

    resolved = _cka_torch.resolve_device(device)
    return _cka_torch.centered(arrays, names, resolved), _cka_torch.hsic_products


def _named(acts: Any, side: str) -> tuple[list[Any], list[Any], bool]:
    if isinstance(acts, Mapping):
        return list(acts.keys()), list(acts.values()), True
    if isinstance(acts, Sequence) and not isinstance(acts, str):
        return list(range(len(acts))), list(acts), False
    raise InvalidParameterError(
        f"{side} must be a mapping of layer name to activations or a sequence of "
        f"activation arrays; got {type(acts).__name__}. For a single pair use linear_cka."
    )


def _is_collection(acts: Any) -> bool:
    return isinstance(acts, (Mapping, Sequence)) and not isinstance(acts, str)


def _layout(acts_a: Any, acts_b: Any) -> tuple[_Layout, list[Any]]:
    labels_a, arrays_a, map_a = _named(acts_a, "acts_a")
    if not arrays_a:
        raise InvalidParameterError("acts_a must hold at least one representation; got none.")
    if acts_b is None:
        n_a = len(arrays_a)
        pairs = [(i, j) for i in range(n_a) for j in range(i + 1, n_a)]
        labels = labels_a if map_a else None
        names = [str(v) for v in labels_a]
        return _Layout(
            names, list(range(n_a)), list(range(n_a)), pairs, labels, labels, "within"
        ), arrays_a
    labels_b, arrays_b, map_b = _named(acts_b, "acts_b")
    if not arrays_b:
        raise InvalidParameterError("acts_b must hold at least one representation; got none.")
    n_a, n_b = len(arrays_a), len(arrays_b)
    as_frame = map_a or map_b
    layout = _Layout(
        names=[f"a[{v}]" for v in labels_a] + [f"b[{v}]" for v in labels_b],
        rows=list(range(n_a)),
        cols=list(range(n_a, n_a + n_b)),
        pairs=[(i, n_a + j) for i in range(n_a) for j in range(n_b)],
        row_labels=labels_a if as_frame else None,
        col_labels=labels_b if as_frame else None,
        kind="cross",
    )
    return layout, arrays_a + arrays_b


def _shape_output(
    values: NDArray[np.float64], layout: _Layout
) -> NDArray[np.float64] | pd.DataFrame:
    if layout.row_labels is None:
        return values
    return pd.DataFrame(
        values, index=list(layout.row_labels), columns=list(layout.col_labels or [])
    )


def cka_matrix(
    acts_a: Mapping[str, Any] | Sequence[Any],
    acts_b: Mapping[str, Any] | Sequence[Any] | None = None,
    *,
    debiased: bool = False,
    form: Form = "auto",
    device: Any = None,
) -> NDArray[np.float64] | pd.DataFrame:
    """Linear CKA between every pair of layers, in one pass (Kornblith et al. 2019, eq. 1-3).

    Each layer is converted and centred once. In feature space every pair costs one
    ``d_i x d_j`` GEMM; in sample space (chosen when layers are wide compared with ``n``)
    blocks of all layers' Gram matrices are formed once and all pairwise inner products
    come out of one ``[L, b^2] @ [b^2, L]`` GEMM per block, so the cost is
    ``n^2 * sum(d)`` instead of ``n^2 * (d_i + d_j)`` per pair.

    Args:
        acts_a: Layer name -> activations ``[n, d_layer]``, or a sequence of arrays.
        acts_b: Optional second set (e.g. another model on the same probe set). ``None``
            compares ``acts_a`` with itself.
        debiased: Use the unbiased HSIC of Song et al. (2012, eq. 5); needs ``n >= 4``.
        form: ``"auto"``, ``"features"`` or ``"gram"``, as in :func:`linear_cka`.
        device: ``None`` (default) computes with numpy on the CPU. A torch device
            (``"cuda"``, ``"cuda:1"``, ``"cpu"``) runs the same float64 products with torch
            there; on a GPU this is the fast path for large probe sets
            (``benchmarks/cka.py --device cuda``). The result is the same to rounding.

    Returns:
        A ``pandas.DataFrame`` (rows: layers of ``acts_a``, columns: layers of ``acts_b``
        or ``acts_a``) when either input is a mapping, so heatmaps and tables keep the
        layer names; otherwise a ``numpy`` array of the same shape. Within one model the
        matrix is symmetric with ones on the diagonal (NaN for zero-variance layers).

    Raises:
        InvalidParameterError: Layers with different numbers of examples, non-finite
            values, too few examples, inputs that are not mappings/sequences, or a
            ``device`` torch cannot use (no CUDA, MPS without float64).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(64, 8))
        >>> cka_matrix({"a": x, "b": 2 * x, "c": rng.normal(size=(64, 8))}).round(2).loc["a", "b"]
        np.float64(1.0)
    """
    _cka.check_form(form)
    layout, arrays = _layout(acts_a, acts_b)
    names = [f"layer {name!r}" for name in layout.names]
    xs, hsic_products = _centered_on(arrays, names, device)
    n = _cka.check_same_n(xs, names)
    _cka.check_min_n(n, debiased=debiased)
    products = hsic_products(xs, layout.pairs, debiased=debiased, form=form)
    values = _cka.cka_from_products(products, layout.rows, layout.cols, layout.names)
    if layout.kind == "within":
        np.fill_diagonal(values, np.where(np.isnan(np.diag(values)), np.nan, 1.0))
    return _shape_output(values, layout)


class CKAAccumulator:
    """Linear CKA accumulated over minibatches, for probe sets too large to hold at once.

    ``estimator="exact"`` keeps, per layer, the running mean and, per pair of layers, the
    centred cross-product ``sum (x - mean_x)(y - mean_y)^T``, merged batch by batch with
    the pairwise update of Chan, Golub & LeVeque (1979). The result equals the one-shot
    :func:`linear_cka` / :func:`cka_matrix` on the concatenated data (biased HSIC);
    memory is ``8 * sum over needed pairs of d_i * d_j`` bytes, independent of ``n``.

    ``estimator="minibatch"`` is the estimator of Nguyen et al. (2021, Sec. 3.1): the
    unbiased HSIC (Song et al. 2012, eq. 5) of each minibatch, averaged over minibatches,
    then normalised as in CKA. It does not depend on the batch size in expectation, but
    it is not the full-data value; every batch needs at least 4 examples.

    ``update`` takes what :func:`cka_matrix` takes: two arrays (one pair, ``compute``
    returns a float), one mapping/sequence of layers (layer x layer), or two of them
    (cross-model). Every batch must have the same layers and widths.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(300, 5)), rng.normal(size=(300, 7))
        >>> acc = CKAAccumulator()
        >>> for start in range(0, 300, 100):
        ...     acc.update(x[start : start + 100], y[start : start + 100])
        >>> bool(np.isclose(acc.compute(), linear_cka(x, y)))
        True
    """

    def __init__(self, *, estimator: Estimator = "exact") -> None:
        if estimator not in _ESTIMATORS:
            raise InvalidParameterError(
                f"estimator must be one of {_ESTIMATORS}; got {estimator!r}."
            )
        self.estimator: Estimator = estimator
        self.reset()

    def reset(self) -> None:
        """Forget all batches (and the layout fixed by the first batch)."""
        self._layout: _Layout | None = None
        self._dims: list[int] = []
        self._n = 0
        self._batches = 0
        self._means: list[NDArray[np.float64]] = []
        self._comoments: dict[tuple[int, int], NDArray[np.float64]] = {}
        self._hsic_sum: NDArray[np.float64] | None = None

    @property
    def n_examples(self) -> int:
        """Number of examples seen so far."""
        return self._n

    @property
    def n_batches(self) -> int:
        """Number of ``update`` calls so far."""
        return self._batches

    def update(self, acts_a: Any, acts_b: Any = None) -> None:
        """Add one minibatch: two arrays, or mappings/sequences of layer activations.

        Raises:
            InvalidParameterError: The layers or widths differ from the first batch, the
                rows disagree, or (minibatch estimator) the batch has fewer than 4 rows.
        """
        layout, xs = self._prepare(acts_a, acts_b)
        nb = xs[0].shape[0]
        if self.estimator == "minibatch":
            _cka.check_min_n(nb, debiased=True)
            hsic = _cka.hsic_products(
                [x - x.mean(axis=0) for x in xs], layout.pairs, debiased=True, form="auto"
            ) / (nb * (nb - 3.0))
            self._hsic_sum = hsic if self._hsic_sum is None else self._hsic_sum + hsic
        else:
            self._merge_exact(xs, layout)
        self._n += nb
        self._batches += 1

    def _prepare(self, acts_a: Any, acts_b: Any) -> tuple[_Layout, list[NDArray[np.float64]]]:
        if acts_b is not None and not _is_collection(acts_a) and not _is_collection(acts_b):
            layout = _Layout(["X", "Y"], [0], [1], [(0, 1)], None, None, "pair")
            arrays = [acts_a, acts_b]
        else:
            layout, arrays = _layout(acts_a, acts_b)
        xs = [
            _cka.as_float64_matrix(a, f"layer {name!r}")
            for a, name in zip(arrays, layout.names, strict=True)
        ]
        _cka.check_same_n(xs, [f"layer {name!r}" for name in layout.names])
        dims = [x.shape[1] for x in xs]
        if self._layout is None:
            self._layout, self._dims = layout, dims
        elif (layout.names, layout.kind) != (
            self._layout.names,
            self._layout.kind,
        ) or dims != self._dims:
            raise InvalidParameterError(
                "Every batch must have the same layers and widths as the first one; first: "
                f"{dict(zip(self._layout.names, self._dims, strict=True))}, "
                f"this batch: {dict(zip(layout.names, dims, strict=True))}."
            )
        return layout, xs

    def _merge_exact(self, xs: list[NDArray[np.float64]], layout: _Layout) -> None:
        nb = xs[0].shape[0]
        batch_means = [x.mean(axis=0) for x in xs]
        centred = [x - m for x, m in zip(xs, batch_means, strict=True)]
        needed = sorted(set(layout.pairs) | {(k, k) for k in range(len(xs))})
        if self._n == 0:
            self._means = batch_means
            self._comoments = {(i, j): centred[i].T @ centred[j] for i, j in needed}
            return
        total = self._n + nb
        deltas = [bm - m for bm, m in zip(batch_means, self._means, strict=True)]
        scale = self._n * nb / total
        for i, j in needed:
            self._comoments[(i, j)] += centred[i].T @ centred[j] + scale * np.outer(
                deltas[i], deltas[j]
            )
        self._means = [m + d * (nb / total) for m, d in zip(self._means, deltas, strict=True)]

    def compute(self) -> float | NDArray[np.float64] | pd.DataFrame:
        """CKA from everything seen so far: a float for a pair, else as :func:`cka_matrix`.

        Raises:
            NeuronMapError: No batch has been added yet.
            InvalidParameterError: Fewer than 2 examples in total (exact estimator).
        """
        layout = self._layout
        if layout is None or self._batches == 0:
            raise NeuronMapError("CKAAccumulator.compute() needs at least one update() first.")
        if self._hsic_sum is not None:  # the minibatch estimator
            products = self._hsic_sum / self._batches
        else:
            _cka.check_min_n(self._n, debiased=False)
            products = np.full((len(self._dims), len(self._dims)), np.nan)
            for (i, j), m in self._comoments.items():
                products[i, j] = products[j, i] = float(np.vdot(m, m))
        values = _cka.cka_from_products(products, layout.rows, layout.cols, layout.names)
        if layout.kind == "pair":
            return float(values[0, 0])
        if layout.kind == "within" and self.estimator == "exact":
            np.fill_diagonal(values, np.where(np.isnan(np.diag(values)), np.nan, 1.0))
        return _shape_output(values, layout)
