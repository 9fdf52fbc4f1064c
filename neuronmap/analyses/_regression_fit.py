"""Cross-validated ridge regression, its permutation null and R², for the regression probes.

Private: the public entry points are :class:`neuronmap.analyses.regression_probing.RegressionProbing`
and :class:`neuronmap.analyses.world_model.WorldModelProbe`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from neuronmap.analyses._probe_fit import FoldData, _ridge_hat, prepare_folds

__all__ = [
    "ALPHAS",
    "FoldData",
    "global_permutations",
    "oof_ridge_cv",
    "permutation_r2",
    "prepare_folds",
    "r2_score",
    "regression_folds",
]

Folds = list[tuple[NDArray[np.intp], NDArray[np.intp]]]
ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 5, 8))
"""Ridge penalties searched by generalised cross-validation inside each training fold."""


def regression_folds(n: int, cv: int, *, random_state: int, groups: NDArray[Any] | None = None) -> Folds:
    """Shuffled k-fold splits, or group k-fold (whole groups held out) when ``groups`` is given."""
    from sklearn.model_selection import GroupKFold, KFold

    if groups is None:
        return list(KFold(n_splits=cv, shuffle=True, random_state=random_state).split(np.zeros((n, 1))))
    _, codes = np.unique(groups.astype(str), return_inverse=True)
    splits = min(cv, int(codes.max()) + 1)
    return list(GroupKFold(n_splits=splits).split(np.zeros((n, 1)), groups=codes))


def r2_score(y: Any, pred: Any, axis: int = -1) -> NDArray[np.float64]:
    """Coefficient of determination ``1 - SS_res / SS_tot`` along ``axis`` (vectorised for the bootstrap).

    ``SS_tot`` is taken about the mean of ``y`` over all held-out predictions, as
    :func:`sklearn.metrics.r2_score` does on pooled out-of-fold predictions; it is negative
    when the probe predicts worse than that mean.
    """
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    ss_res = ((y - pred) ** 2).sum(axis=axis)
    ss_tot = ((y - y.mean(axis=axis, keepdims=True)) ** 2).sum(axis=axis)
    return np.asarray(1.0 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan))


def oof_ridge_cv(
    data: list[FoldData], y: NDArray[np.float64], alphas: tuple[float, ...] = ALPHAS
) -> tuple[NDArray[np.float64], list[float]]:
    """Out-of-fold predictions of :class:`sklearn.linear_model.RidgeCV` (penalty chosen per fold by GCV).

    Returns:
        ``[n]`` held-out predictions and the penalty chosen in each fold.
    """
    from sklearn.linear_model import RidgeCV

    pred = np.empty(len(y), dtype=np.float64)
    chosen = []
    for fold in data:
        model = RidgeCV(alphas=alphas).fit(fold.z_train, y[fold.train])
        pred[fold.test] = model.predict(fold.z_test)
        chosen.append(float(model.alpha_))
    return pred, chosen


def permutation_r2(data: list[FoldData], y: NDArray[np.float64], perms: NDArray[np.intp]) -> NDArray[np.float64]:
    """Out-of-fold R² of a fixed-penalty ridge probe for every relabelling ``y[perms[p]]``.

    The penalty is label-free (the mean non-zero eigenvalue of the fold's Gram matrix), so
    the same statistic is computed under every permutation and the test is exact; each fold's
    hat matrix then serves all permutations in one matrix product (as in :mod:`._probe_fit`).

    Returns:
        ``[P]`` R² values, one per row of ``perms``.
    """
    targets = y[perms]  # [P, n]
    pred = np.empty_like(targets)
    for fold in data:
        zc = fold.z_train - fold.z_train.mean(axis=0)
        alpha = float((zc**2).sum() / max(1, min(zc.shape)))
        hat = _ridge_hat(fold.z_train, fold.z_test, alpha)  # [n_te, n_tr]
        train = targets[:, fold.train]
        mean = train.mean(axis=1, keepdims=True)
        pred[:, fold.test] = (train - mean) @ hat.T + mean
    return r2_score(targets, pred, axis=1)


def global_permutations(n: int, count: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """``count`` random permutations of ``range(n)`` as rows."""
    return np.asarray(rng.permuted(np.tile(np.arange(n, dtype=np.intp), (count, 1)), axis=1))

