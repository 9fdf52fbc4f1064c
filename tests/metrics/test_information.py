"""The mutual-information and entropy estimators: hand-computed values and agreement with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from scipy.spatial.distance import cdist
from sklearn.feature_selection import mutual_info_classif

from neuronmap.metrics.information import entropy_miller_madow, entropy_plugin, mi_knn, mi_miller_madow


def test_miller_madow_entropy_matches_the_hand_computed_value() -> None:
    """Counts (3, 1): H = -(3/4 ln 3/4 + 1/4 ln 1/4), plus (m - 1) / 2N = 1/8 (Miller 1955)."""
    plugin = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert entropy_plugin([3, 1]) == pytest.approx(plugin)
    assert entropy_plugin([3, 1, 0]) == pytest.approx(scipy.stats.entropy([3, 1]))
    assert entropy_miller_madow([3, 1, 0]) == pytest.approx(plugin + 1 / 8)
    assert entropy_miller_madow([5]) == 0.0


def test_miller_madow_mutual_information_matches_hand_computed_values() -> None:
    z = np.array([0, 0, 1, 1])
    # identical variables: I = ln 2; bins m_Z = m_Y = m_ZY = 2 so the correction is +1/8
    assert mi_miller_madow(z, np.array([0, 0, 1, 1])) == pytest.approx(math.log(2) + 1 / 8)
    assert mi_miller_madow(z, np.array([0, 0, 1, 1]), correction=False) == pytest.approx(math.log(2))
    # independent: plug-in 0; four joint cells make the correction -(4 - 2 - 2 + 1) / 8
    assert mi_miller_madow(z, np.array([0, 1, 0, 1])) == pytest.approx(-1 / 8)


def test_knn_estimator_equals_scikit_learn_for_one_component() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    z = rng.normal(size=(200, 1)) + 0.8 * y[:, None]
    ours = mi_knn(cdist(z, z, "chebyshev"), y, 3)
    theirs = mutual_info_classif(z, y, n_neighbors=3, random_state=0)[0]
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_knn_estimator_approaches_the_true_information_of_a_gaussian_mixture() -> None:
    """Two classes at +-1 with unit noise: I = H(Z) - H(Z|Y), with H(Z|Y) = ln sqrt(2 pi e)."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    z = (2.0 * y - 1.0)[:, None] + rng.normal(size=(2000, 1))
    grid = np.linspace(-9, 9, 20001)
    density = 0.5 * (scipy.stats.norm.pdf(grid, -1) + scipy.stats.norm.pdf(grid, 1))
    truth = -np.trapezoid(density * np.log(density), grid) - 0.5 * math.log(2 * math.pi * math.e)
    assert mi_knn(cdist(z, z, "chebyshev"), y, 3) == pytest.approx(truth, abs=0.03)
