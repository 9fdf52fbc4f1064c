"""The ridge probe numerics: agreement with scikit-learn, valid permutation nulls, exact projections."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neuronmap.metrics.probing import (
    macro_f1,
    prepare_folds,
    r2_score,
    ridge_correct_counts,
    stratified_folds,
    within_fold_permutations,
)


def test_ridge_null_statistic_equals_sklearn_ridge_classifier() -> None:
    rng = np.random.default_rng(0)
    for n, d, k in [(90, 6, 2), (120, 200, 3)]:  # primal and dual forms of the hat matrix
        y = np.repeat(np.arange(k), n // k)
        x = rng.normal(size=(n, d)) + 0.7 * y[:, None]
        folds = stratified_folds(y, 5, random_state=0)
        data = prepare_folds(x, folds, max_components=None, random_state=0)
        perms = np.vstack([np.arange(n), within_fold_permutations(folds, n, 3, rng)])
        counts = ridge_correct_counts(data, y, perms)
        for row, perm in zip(counts, perms, strict=True):
            y_perm = y[perm]
            expected = sum(
                int(np.sum(make_pipeline(StandardScaler(), RidgeClassifier()).fit(x[tr], y_perm[tr]).predict(x[te])
                           == y_perm[te]))
                for tr, te in folds
            )
            assert row == expected


def test_within_fold_permutations_keep_each_folds_labels() -> None:
    y = np.array([0] * 30 + [1] * 20 + [2] * 10)
    folds = stratified_folds(y, 5, random_state=0)
    perms = within_fold_permutations(folds, len(y), 50, np.random.default_rng(0))
    for perm in perms:
        assert sorted(perm) == list(range(len(y)))
        for _, test in folds:
            assert set(perm[test]) == set(test)
    assert len({tuple(p) for p in perms}) == 50


def test_permutation_p_values_are_valid_under_the_null() -> None:
    """P(p <= a) <= a when the activations are independent of the labels (Phipson & Smyth 2010)."""
    rng = np.random.default_rng(1)
    pvalues = []
    for _ in range(100):
        y = rng.permutation(np.repeat([0, 1], 20))
        x = rng.normal(size=(40, 3))
        folds = stratified_folds(y, 4, random_state=0)
        perms = np.vstack([np.arange(40), within_fold_permutations(folds, 40, 39, rng)])
        counts = ridge_correct_counts(prepare_folds(x, folds, max_components=10, random_state=0), y, perms)
        pvalues.append((1 + np.count_nonzero(counts[1:] >= counts[0])) / 40)
    p = np.array(pvalues)
    # binomial(100, 0.1) exceeds 18 with probability < 0.5 %; uniform p-values fill the upper half too
    assert np.sum(p <= 0.1) <= 18
    assert 0.35 < np.mean(p > 0.5) < 0.65


def test_macro_f1_equals_sklearn_also_vectorised_and_with_absent_classes() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, (5, 30)), rng.integers(0, 4, (5, 30))
    y_pred[0] = np.where(y_pred[0] == 3, 2, y_pred[0])  # class 3 never predicted
    y_true[1] = np.where(y_true[1] == 0, 1, y_true[1])  # class 0 never true
    expected = [f1_score(t, p, average="macro", zero_division=0) for t, p in zip(y_true, y_pred, strict=True)]
    np.testing.assert_allclose(macro_f1(y_true, y_pred), expected)
    np.testing.assert_allclose(macro_f1(y_true.T, y_pred.T, axis=0), expected)


def test_pca_projection_is_exact_when_the_fold_is_narrower_than_max_components() -> None:
    """L2-penalised logistic regression lives in the span of the centred training rows."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = rng.normal(size=(80, 300)) + 0.25 * y[:, None]
    folds = stratified_folds(y, 5, random_state=0)
    projected = prepare_folds(x, folds, max_components=128, random_state=0)  # 64 training rows < 128
    full = prepare_folds(x, folds, max_components=None, random_state=0)
    assert projected[0].z_train.shape[1] == 64 and full[0].z_train.shape[1] == 300
    for a, b in zip(projected, full, strict=True):
        pa = LogisticRegression(max_iter=2000, tol=1e-10).fit(a.z_train, y[a.train]).decision_function(a.z_test)
        pb = LogisticRegression(max_iter=2000, tol=1e-10).fit(b.z_train, y[b.train]).decision_function(b.z_test)
        np.testing.assert_allclose(pa, pb, atol=1e-4)


def test_r2_score_matches_scikit_learn():
    from sklearn.metrics import r2_score as sk_r2

    rng = np.random.default_rng(0)
    y, pred = rng.standard_normal(50), rng.standard_normal(50)
    assert float(r2_score(y, pred)) == pytest.approx(sk_r2(y, pred))
