from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from _planted import LAYERS, planted_model, planted_probe
from scipy.spatial.distance import cdist
from sklearn.feature_selection import mutual_info_classif
from torch import nn

import neuronmap as nm
from neuronmap.analyses.information import (
    Information,
    _entropy_miller_madow,
    _entropy_plugin,
    _mi_knn,
    _mi_miller_madow,
)
from neuronmap.errors import InvalidParameterError
from neuronmap.reporters import LocalReporter


def test_a_layer_that_encodes_the_label_carries_more_information_than_noise(tmp_path) -> None:
    reporter = LocalReporter(tmp_path, run_name="run")
    monitor = nm.NeuronMap(planted_probe(n=150), layers=LAYERS, analyses=[Information(n_permutations=99)],
                           reporters=[reporter], strict=True)
    result = monitor.run(planted_model(), step=0).results["information"]
    m = result.metrics
    assert m["signal/mi_knn"] > 0.15 > max(m["noise_a/mi_knn"], m["noise_b/mi_knn"])
    assert m["signal/mi_knn_p_adj"] < 0.05
    assert m["noise_a/mi_knn_p_adj"] > 0.05 and m["noise_b/mi_knn_p_adj"] > 0.05
    label_entropy = result.tables["information"]["label_entropy"].iloc[0]
    assert m["signal/mi_knn"] <= label_entropy  # I(Z; Y) <= H(Y)
    assert set(result.tables["components"]["layer"]) == set(LAYERS)
    assert (reporter.run_dir / "figures" / "0" / "information" / "information.png").exists()


def test_miller_madow_entropy_matches_the_hand_computed_value() -> None:
    """Counts (3, 1): H = -(3/4 ln 3/4 + 1/4 ln 1/4), plus (m - 1) / 2N = 1/8 (Miller 1955)."""
    plugin = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert _entropy_plugin([3, 1]) == pytest.approx(plugin)
    assert _entropy_plugin([3, 1, 0]) == pytest.approx(scipy.stats.entropy([3, 1]))
    assert _entropy_miller_madow([3, 1, 0]) == pytest.approx(plugin + 1 / 8)
    assert _entropy_miller_madow([5]) == 0.0


def test_miller_madow_mutual_information_matches_hand_computed_values() -> None:
    z = np.array([0, 0, 1, 1])
    # identical variables: I = ln 2; bins m_Z = m_Y = m_ZY = 2 so the correction is +1/8
    assert _mi_miller_madow(z, np.array([0, 0, 1, 1])) == pytest.approx(math.log(2) + 1 / 8)
    assert _mi_miller_madow(z, np.array([0, 0, 1, 1]), correction=False) == pytest.approx(math.log(2))
    # independent: plug-in 0; four joint cells make the correction -(4 - 2 - 2 + 1) / 8
    assert _mi_miller_madow(z, np.array([0, 1, 0, 1])) == pytest.approx(-1 / 8)


def test_knn_estimator_equals_scikit_learn_for_one_component() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    z = rng.normal(size=(200, 1)) + 0.8 * y[:, None]
    ours = _mi_knn(cdist(z, z, "chebyshev"), y, 3)
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
    assert _mi_knn(cdist(z, z, "chebyshev"), y, 3) == pytest.approx(truth, abs=0.03)


def test_unit_entropy_of_uniform_and_constant_units() -> None:
    """A unit spread evenly over 8 bins has H_MM = ln 8 + 7 / 2N; a constant unit has 0."""
    n = 64
    rows = np.column_stack([np.repeat(np.arange(8.0), 8), np.full(n, 3.0)])
    probe = nm.ProbeSet(torch.tensor(rows, dtype=torch.float32), labels=[0, 1] * 32)
    result = nm.NeuronMap(probe, layers=["0"], analyses=[Information(n_permutations=0)], reporters=[]).run(
        nn.Sequential(nn.Identity()), step=0).results["information"]
    assert result.metrics["0/entropy"] == pytest.approx((math.log(8) + 7 / (2 * n)) / 2)
    assert "0/mi_knn_p" not in result.metrics


def test_a_single_class_is_skipped() -> None:
    probe = nm.ProbeSet(torch.randn(20, 8), labels=["x"] * 20)
    result = nm.NeuronMap(probe, layers=["signal"], analyses=[Information()], reporters=[]).run(
        planted_model(), step=0).results["information"]
    assert result.status == "skipped"
    assert result.notes == ("Column 'label' has a single class; mutual information is 0.",)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_bins": 1}, r"n_bins must be an integer >= 2; got 1"),
        ({"n_components": 0}, r"n_components must be an integer >= 1; got 0"),
        ({"p_adjust": "bh"}, r"p_adjust must be one of .*; got 'bh'"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        Information(**kwargs)
