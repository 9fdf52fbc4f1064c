from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _planted import LAYERS, planted_model, planted_probe
from torch import nn

import neuronmap as nm
from neuronmap.analyses.information import Information
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
