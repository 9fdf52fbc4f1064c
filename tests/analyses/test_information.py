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
        ({"n_bins": 1}, r"^Information: n_bins must be an int in \[2, inf\); got 1\.$"),
        ({"n_components": 0}, r"^Information: n_components must be an int in \[1, inf\); got 0\.$"),
        ({"p_adjust": "bh"}, r"^Information: p_adjust must be one of .*; got 'bh'\.$"),
        ({"max_examples": 9}, r"^Information: max_examples must be None or an int in \[10, inf\); got 9\.$"),
        ({"alpha": 0}, r"^Information: alpha must be a float in \(0, 1\); got 0\.$"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        Information(**kwargs)


def test_alpha_sets_the_level_of_the_resolution_note_and_the_findings() -> None:
    """19 permutations over three layers reach a Holm-corrected p of 3/20 = 0.15 at best."""
    probe = planted_probe(n=150)
    runs = {}
    for alpha in (0.05, 0.2):
        analysis = Information(n_permutations=19, alpha=alpha)
        result = nm.NeuronMap(probe, layers=LAYERS, analyses=[analysis], reporters=[]).run(
            planted_model(), step=0).results["information"]
        runs[alpha] = (result, analysis.findings(result))
    assert any("p-value resolution" in note for note in runs[0.05][0].notes)
    assert not any("p-value resolution" in note for note in runs[0.2][0].notes)
    assert runs[0.2][0].metrics["signal/mi_knn_p_adj"] < 0.2
    assert any("signal" in str(f) for f in runs[0.2][1]) and not any("signal" in str(f) for f in runs[0.05][1])
