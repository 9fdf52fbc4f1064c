"""Cross-validated ridge probes on arrays: folds, label-free preprocessing, permutations and closed-form nulls.

The classification probes (:class:`neuronmap.analyses.probing.Probing`,
:class:`neuronmap.analyses.representation_bias.RepresentationBias`) score every relabelling of a
permutation test with one matrix product per fold (:func:`ridge_cv_statistic`); the regression
probes (:class:`neuronmap.analyses.regression_probing.RegressionProbing`,
:class:`neuronmap.analyses.world_model.WorldModelProbe`) do the same for R² (:func:`permutation_r2`).
Permutations stay within test folds so that stratification holds under the null (Winkler et al. 2014).

References:
    Winkler, Ridgway, Webster, Smith & Nichols (2014). Permutation inference for the general
    linear model. NeuroImage 92.
    Sokolova & Lapalme (2009). A systematic analysis of performance measures for classification
    tasks. Information Processing & Management 45(4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

__all__ = [
    "ALPHAS",
    "FoldData",
    "global_permutations",
    "macro_f1",
    "oof_ridge_cv",
    "permutation_r2",
    "prepare_folds",
    "r2_score",
    "regression_folds",
    "ridge_correct_counts",
    "ridge_cv_statistic",
    "stratified_folds",
    "within_fold_permutations",
]

Folds = list[tuple[NDArray[np.intp], NDArray[np.intp]]]
# Entries of the one-hot target block multiplied at once (bounds memory near 16 MB).
_CHUNK_ENTRIES = 2_000_000


@dataclass(frozen=True)
class FoldData:
    """One cross-validation fold with its label-independent preprocessing already applied."""

    train: NDArray[np.intp]
    """Indices of the training examples."""
    test: NDArray[np.intp]
    """Indices of the held-out examples."""
    z_train: NDArray[np.float64]
    """Centred or standardised (and optionally PCA-projected) training activations."""
    z_test: NDArray[np.float64]
    """The held-out activations under the training fold's transform."""
    projected: bool = False
    """Whether the fold was projected onto its own principal components."""


def stratified_folds(y: NDArray[np.int64], cv: int, *, random_state: int) -> Folds:
    """Shuffled stratified k-fold splits (:class:`sklearn.model_selection.StratifiedKFold`)."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    return [(tr, te) for tr, te in splitter.split(np.zeros((len(y), 1)), y)]


def prepare_folds(
    x: NDArray[np.float64],
    folds: Folds,
    *,
    max_components: int | None,
    random_state: int,
    standardize: bool = True,
) -> list[FoldData]:
    """Centre (and by default scale) each fold on its training part; optionally project onto PCs.

    Both steps ignore the labels, so they are computed once per fold and shared by the probe,
    the control task and every permutation (refitting them per permutation gives the same
    numbers).
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    out = []
    for train, test in folds:
        scaler = StandardScaler(with_std=standardize).fit(x[train])
        z_train, z_test = scaler.transform(x[train]), scaler.transform(x[test])
        projected = False
        if max_components is not None and z_train.shape[1] > max_components:
            pca = PCA(n_components=min(max_components, len(train)), random_state=random_state).fit(z_train)
            z_train, z_test, projected = pca.transform(z_train), pca.transform(z_test), True
        out.append(FoldData(train, test, np.ascontiguousarray(z_train), np.ascontiguousarray(z_test), projected))
    return out


def within_fold_permutations(folds: Folds, n: int, count: int, rng: np.random.Generator) -> NDArray[np.intp]:
    """``count`` random relabellings that permute indices only inside each test fold.

    Row ``p`` maps example ``i`` to the example whose label it receives; every fold keeps its
    class composition, so stratification holds under the null (Winkler et al. 2014).
    """
    perms = np.tile(np.arange(n, dtype=np.intp), (count, 1))
    for _, test in folds:
        perms[:, test] = rng.permuted(np.tile(test, (count, 1)), axis=1)
    return perms


def _ridge_hat(z_train: NDArray[np.float64], z_test: NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    """``(Z_te - mu) (Zc^T Zc + alpha I)^-1 Zc^T``: held-out ridge scores per unit training target.

    Solved in the primal (``d x d``) or dual (``n x n``) form, whichever is smaller; both are
    equal by the push-through identity.
    """
    mean = z_train.mean(axis=0)
    zc, zt = z_train - mean, z_test - mean
    n, d = zc.shape
    if d <= n:
        gram = zc.T @ zc
        gram[np.diag_indices(d)] += alpha
        return np.asarray(zt @ scipy.linalg.solve(gram, zc.T, assume_a="pos"))
    kernel = zc @ zc.T
    kernel[np.diag_indices(n)] += alpha
    return np.asarray(scipy.linalg.solve(kernel, zc @ zt.T, assume_a="pos").T)


def ridge_cv_statistic(
    folds: list[FoldData], y: NDArray[np.int64], perms: NDArray[np.intp], *, alpha: float = 1.0
) -> NDArray[np.float64]:
    """Cross-validated ridge accuracy with ties broken by the mean held-out margin.

    The statistic is ``correct + (1/2 + arctan(m) / pi)``: the number of correctly predicted
    held-out examples plus a fraction in ``(0, 1)`` that grows with ``m``, the mean over held-out
    examples of the true class's score minus the largest other score. The order is the accuracy
    order, and among relabellings with equal accuracy the one whose probe is more confident in
    the true labels ranks higher. Integer counts tie often (at ``n = 200`` each count value has a
    probability near 0.05 under the null), and ``p = (1 + #{null >= observed}) / (B + 1)``
    counts every tie against the observed labelling, so the test on counts alone rejected a true
    null in 3.0 % of noise layers at alpha = 0.05 (binomial 99 % band [3.3, 6.9] %). The margin
    is continuous, so the p-value is exact (``P(p <= alpha) = floor(alpha (B + 1)) / (B + 1)``).

    The probe is :class:`sklearn.linear_model.RidgeClassifier` (``alpha``, intercept): targets
    are ``+-1`` one-hot columns, ``W = (Zc^T Zc + alpha I)^-1 Zc^T (T - t_bar)`` and the held-out
    scores ``(Z_te - mu) W + t_bar`` (with two classes this is sklearn's single-column rule).
    ``Zc^T 1 = 0`` removes ``t_bar`` from the product, so the scores of all relabellings are one
    GEMM of the fold's hat matrix with the stacked targets.

    Args:
        folds: Prepared folds.
        y: Integer labels ``0 .. K-1``.
        perms: ``[P, n]`` relabellings (``y[perms[p]]`` is labelling ``p``).
        alpha: Ridge penalty.

    Returns:
        ``[P]`` statistics; ``np.floor`` of them is the number of correct held-out predictions.
    """
    n_classes = int(y.max()) + 1
    correct = np.zeros(len(perms), dtype=np.int64)
    margin = np.zeros(len(perms), dtype=np.float64)
    for fold in folds:
        hat = _ridge_hat(fold.z_train, fold.z_test, alpha)
        chunk = max(1, _CHUNK_ENTRIES // (len(fold.train) * n_classes))
        for start in range(0, len(perms), chunk):
            block = perms[start : start + chunk]
            y_train, y_test = y[block[:, fold.train]], y[block[:, fold.test]]
            if n_classes == 2:
                # the class-1 column is minus the class-0 one: one GEMM column, margin +-2 score_0
                targets2 = 2.0 * (y_train.T == 0) - 1.0  # [n_tr, P]
                score0 = hat @ targets2 + targets2.mean(axis=0)  # [n_te, P]
                sign = 1.0 - 2.0 * y_test.T  # +1 where the truth is class 0
                correct[start : start + len(block)] += np.count_nonzero((score0 >= 0) == (sign > 0), axis=0)
                margin[start : start + len(block)] += 2.0 * (score0 * sign).sum(axis=0)
                continue
            targets = 2.0 * (y_train.T[:, :, None] == np.arange(n_classes)) - 1.0  # [n_tr, P, K]
            t_bar = targets.mean(axis=0)  # [P, K]
            scores = (hat @ targets.reshape(len(fold.train), -1)).reshape(len(fold.test), len(block), n_classes)
            scores += t_bar
            pred = np.argmax(scores, axis=2)  # [n_te, P]
            correct[start : start + len(block)] += np.count_nonzero(y_test == pred.T, axis=1)
            truth = y_test.T[:, :, None]  # [n_te, P, 1]
            true_score = np.take_along_axis(scores, truth, axis=2)[:, :, 0]
            other = np.where(np.arange(n_classes) == truth, -np.inf, scores).max(axis=2)
            margin[start : start + len(block)] += (true_score - other).sum(axis=0)
    fraction = 0.5 + np.arctan(margin / len(y)) / np.pi
    # keep the fraction strictly inside (0, 1) so floor() recovers the count in float64
    return correct.astype(np.float64) + np.clip(fraction, 1e-9, 1.0 - 1e-9)


def ridge_correct_counts(
    folds: list[FoldData], y: NDArray[np.int64], perms: NDArray[np.intp], *, alpha: float = 1.0
) -> NDArray[np.int64]:
    """Correct out-of-fold predictions of a ridge probe, for every relabelling in ``perms``.

    The count part of :func:`ridge_cv_statistic` (see there for the probe).

    Returns:
        ``[P]`` numbers of correctly predicted held-out examples.
    """
    return np.floor(ridge_cv_statistic(folds, y, perms, alpha=alpha)).astype(np.int64)


def macro_f1(y_true: Any, y_pred: Any, axis: int = -1) -> NDArray[np.float64]:
    """Macro-averaged F1 along ``axis``, vectorised for the bootstrap.

    ``F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k)`` averaged over the classes present in ``y_true`` or
    ``y_pred`` (a class absent from both is not counted; one predicted but absent scores 0), which
    is :func:`sklearn.metrics.f1_score` with ``average="macro"`` (Sokolova & Lapalme 2009).
    """
    t, p = np.moveaxis(np.asarray(y_true), axis, -1), np.moveaxis(np.asarray(y_pred), axis, -1)
    classes = np.union1d(np.unique(t), np.unique(p))
    total = np.zeros(t.shape[:-1])
    counted = np.zeros(t.shape[:-1])
    for k in classes:
        is_t, is_p = t == k, p == k
        tp = np.count_nonzero(is_t & is_p, axis=-1)
        denom = np.count_nonzero(is_t, axis=-1) + np.count_nonzero(is_p, axis=-1)
        present = denom > 0
        total += np.where(present, 2.0 * tp / np.maximum(denom, 1), 0.0)
        counted += present
    return np.asarray(total / np.maximum(counted, 1))


# ---------------------------------------------------------------- regression probes
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
    hat matrix then serves all permutations in one matrix product (as in :func:`ridge_cv_statistic`).

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

