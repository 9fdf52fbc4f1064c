"""WEAT against Caliskan et al.'s formula by hand, its permutation test, and the centroid-distance test."""

from __future__ import annotations

import numpy as np
import pytest

from neuronmap.metrics.bias import centroid_distance_test, weat_effect_size, weat_test


def _caliskan_by_hand(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    def cos(u: np.ndarray, v: np.ndarray) -> float:
        return float(u @ v / np.sqrt((u @ u) * (v @ v)))

    def s(w: np.ndarray) -> float:
        return sum(cos(w, ai) for ai in a) / len(a) - sum(cos(w, bi) for bi in b) / len(b)

    sx, sy = [s(w) for w in x], [s(w) for w in y]
    both = sx + sy
    mean = sum(both) / len(both)
    std = (sum((v - mean) ** 2 for v in both) / (len(both) - 1)) ** 0.5
    return (sum(sx) / len(sx) - sum(sy) / len(sy)) / std


def test_weat_effect_size_equals_caliskan_formula_by_hand() -> None:
    rng = np.random.default_rng(3)
    x, y, a, b = rng.normal(size=(5, 4)), rng.normal(size=(7, 4)), rng.normal(size=(3, 4)), rng.normal(size=(4, 4))
    assert weat_effect_size(x, y, a, b) == pytest.approx(_caliskan_by_hand(x, y, a, b), rel=1e-10)
    # swapping the targets (or the attributes) flips the sign
    assert weat_effect_size(y, x, a, b) == pytest.approx(-weat_effect_size(x, y, a, b))
    assert weat_effect_size(x, y, b, a) == pytest.approx(-weat_effect_size(x, y, a, b))


def test_weat_test_returns_the_effect_size_and_a_valid_one_sided_p_value() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 6)), rng.normal(size=(8, 6))
    x, y = a + 0.2 * rng.normal(size=(8, 6)), b + 0.2 * rng.normal(size=(8, 6))  # X near A, Y near B
    effect, p = weat_test(x, y, a, b, n_permutations=999)
    assert effect == pytest.approx(weat_effect_size(x, y, a, b)) and effect > 1.0
    assert 1 / 1000 <= p <= 0.01
    _, p_reversed = weat_test(y, x, a, b, n_permutations=999)
    assert p_reversed > 0.9  # one-sided: the opposite association is not significant


def test_centroid_distance_is_scale_free_and_detects_separated_groups() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 30)
    x = rng.normal(size=(90, 4))
    x[y == 2, 0] += 3.0
    distance, p = centroid_distance_test(x, y, 199, np.random.default_rng(1))
    scaled, _ = centroid_distance_test(10.0 * x, y, 199, np.random.default_rng(1))
    assert scaled == pytest.approx(distance) and p == pytest.approx(1 / 200)
    _, p_null = centroid_distance_test(rng.normal(size=(90, 4)), y, 199, np.random.default_rng(1))
    assert p_null > 0.01
