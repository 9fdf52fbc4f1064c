"""Mutual information and entropy estimators on arrays, in nats.

* :func:`mi_knn`: ``I(Z; Y)`` between a continuous vector ``Z`` and discrete labels ``Y`` with the
  k-nearest-neighbour estimator of Ross (2014, eq. 2), max-norm as in Kraskov et al. (2004); with
  one column it equals :func:`sklearn.feature_selection.mutual_info_classif`.
* :func:`mi_miller_madow`: the plug-in estimate on discrete codes with the Miller-Madow bias
  correction of each entropy, ``H_MM = H_plugin + (m - 1) / (2N)`` for ``m`` occupied bins and ``N``
  examples (Miller 1955; Paninski 2003, eq. 3.6).
* :func:`unit_entropy`: the mean Miller-Madow entropy of each unit in equal-width bins, the per-unit
  binning of Shwartz-Ziv & Tishby (2017) without its joint histogram (undersampled in any realistic
  width, Saxe et al. 2018).

:class:`neuronmap.analyses.information.Information` runs them per layer.

References:
    Ross (2014). Mutual Information between Discrete and Continuous Data Sets. PLoS ONE 9(2).
    Kraskov, Stoegbauer & Grassberger (2004). Estimating mutual information. Phys. Rev. E 69.
    Miller (1955). Note on the bias of information estimates. In Information Theory in
    Psychology, Free Press.
    Paninski (2003). Estimation of Entropy and Mutual Information. Neural Computation 15(6).
    Shwartz-Ziv & Tishby (2017). Opening the Black Box of Deep Neural Networks via Information.
    arXiv:1703.00810.
    Saxe et al. (2018). On the Information Bottleneck Theory of Deep Learning. ICLR.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import digamma

__all__ = [
    "entropy_miller_madow",
    "entropy_plugin",
    "mi_knn",
    "mi_miller_madow",
    "quantile_codes",
    "top_components",
    "unit_entropy",
]


def top_components(x: NDArray[np.float64], k: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Standardised scores on the top ``k`` principal components (fewer if the data span fewer).

    Returns:
        ``[n, k']`` scores, each column with unit standard deviation, and their explained variance ratios.
    """
    from sklearn.decomposition import PCA

    if np.ptp(x, axis=0).max() == 0:  # a constant layer: one zero column carries no information
        return np.zeros((x.shape[0], 1)), np.zeros(1)
    k = min(k, x.shape[1], x.shape[0] - 1)
    pca = PCA(n_components=k, random_state=seed).fit(x)
    scores = pca.transform(x)
    # directions with (numerically) no variance would become pure rounding noise once scaled
    keep = pca.explained_variance_ratio_ > 1e-10
    return scores[:, keep] / scores[:, keep].std(axis=0), pca.explained_variance_ratio_[keep]


def mi_knn(distances: NDArray[np.float64], y: NDArray[np.int64], k: int) -> float:
    """Ross (2014) estimator from a max-norm distance matrix, as scikit-learn computes it.

    ``I = psi(N) + <psi(k)> - <psi(N_y)> - <psi(m)>``: ``d_i`` is the distance to the k-th
    nearest example of the same class, ``m_i`` the number of examples (itself included) closer
    than ``d_i``; examples alone in their class are left out. Clipped at 0 like scikit-learn.

    Args:
        distances: ``[n, n]`` Chebyshev distances (``scipy.spatial.distance.cdist(z, z, "chebyshev")``).
        y: ``[n]`` integer labels ``0 .. K-1``.
        k: Neighbours (Ross 2014 uses 3).
    """
    n = len(y)
    radius = np.zeros(n)
    k_used = np.zeros(n)
    class_size = np.bincount(y)[y]
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < 2:
            continue
        within = distances[np.ix_(members, members)].copy()
        np.fill_diagonal(within, np.inf)
        kk = min(k, len(members) - 1)
        radius[members] = np.nextafter(np.partition(within, kk - 1, axis=1)[:, kk - 1], 0)
        k_used[members] = kk
    used = class_size > 1
    m = np.count_nonzero(distances[used] <= radius[used, None], axis=1)
    mi = digamma(used.sum()) + digamma(k_used[used]).mean() - digamma(class_size[used]).mean() - digamma(m).mean()
    return float(max(0.0, mi))


def entropy_plugin(counts: ArrayLike) -> float:
    """Plug-in (maximum-likelihood) entropy ``-sum p log p`` in nats of a histogram."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def entropy_miller_madow(counts: ArrayLike) -> float:
    """Miller-Madow entropy ``H_plugin + (m - 1) / (2N)``, ``m`` occupied bins (Miller 1955)."""
    c = np.asarray(counts, dtype=np.float64)
    return entropy_plugin(c) + (np.count_nonzero(c) - 1) / (2.0 * c.sum())


def mi_miller_madow(codes: NDArray[np.int64], y: NDArray[np.int64], *, correction: bool = True) -> float:
    """``I = H(Z) + H(Y) - H(Z, Y)`` from discrete codes, each entropy Miller-Madow corrected.

    So ``I_MM = I_plugin - (m_ZY - m_Z - m_Y + 1) / (2N)``; ``correction=False`` gives the plug-in value.
    """
    entropy = entropy_miller_madow if correction else entropy_plugin
    joint = codes * (int(y.max()) + 1) + y
    return entropy(np.bincount(codes)) + entropy(np.bincount(y)) - entropy(np.bincount(joint))


def quantile_codes(z: NDArray[np.float64], n_bins: int) -> NDArray[np.int64]:
    """One code per example for the joint equal-frequency bin of its rows in ``z``."""
    columns = []
    for column in z.T:
        edges = np.unique(np.quantile(column, np.linspace(0, 1, n_bins + 1)[1:-1]))
        columns.append(np.searchsorted(edges, column, side="right"))
    return np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def unit_entropy(x: NDArray[np.float64], n_bins: int) -> float:
    """Mean Miller-Madow entropy of each unit in ``n_bins`` equal-width bins over its range.

    0 for a constant unit, at most ``log n_bins`` (plus the Miller-Madow term).
    """
    low, span = x.min(axis=0), np.ptp(x, axis=0)
    safe = np.where(span > 0, span, 1.0)
    n, d = x.shape
    codes = np.clip(((x - low) / safe * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount((codes + np.arange(d) * n_bins).ravel(), minlength=d * n_bins).reshape(d, n_bins)
    p = counts / n
    plugin = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=1)
    return float(np.mean(plugin + (np.count_nonzero(counts, axis=1) - 1) / (2.0 * n)))
