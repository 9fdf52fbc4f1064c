from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from statsmodels.stats.multitest import multipletests
from torch import nn

import neuronmap as nm
from neuronmap.analyses.neurons import NeuronStats
from neuronmap.errors import InvalidParameterError
from neuronmap.reporters import LocalReporter


class _Units(nn.Module):
    """Units with known pathologies on inputs ``x ~ N(0, I)`` whose label is ``x0 > 0``.

    Unit 0 is ``5 x0`` (selective for class 1), unit 1 is ``-100`` (dead after ReLU, at -1 after
    tanh), unit 2 is ``50`` (at +1 after tanh), the others are small random mixtures.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 16)
        self.relu = nn.ReLU()
        self.tanh = nn.Tanh()
        with torch.no_grad():
            self.lin.weight.copy_(0.3 * torch.randn(16, 8))
            self.lin.weight[:3] = 0.0
            self.lin.weight[0, 0] = 5.0
            self.lin.bias.zero_()
            self.lin.bias[1], self.lin.bias[2] = -100.0, 50.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        return self.relu(h) + self.tanh(h)


def _probe(n: int = 120) -> nm.ProbeSet:
    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    return nm.ProbeSet(x, labels=(x[:, 0] > 0).long().numpy())


def _layer(model: nn.Module, probe: nm.ProbeSet, layer: str) -> np.ndarray:
    return np.asarray(nm.NeuronMap(probe, layers=[layer], reporters=[]).capture_activations(model)[layer], float)


def test_dead_saturated_and_selective_units_have_their_known_values(tmp_path) -> None:
    probe, model = _probe(), _Units()
    reporter = LocalReporter(tmp_path, run_name="run")
    monitor = nm.NeuronMap(probe, layers=["lin", "relu", "tanh"], analyses=[NeuronStats()], reporters=[reporter],
                           strict=True)
    result = monitor.run(model, step=0).results["neuron_stats"]
    m = result.metrics
    assert m["relu/dead_fraction"] == 1 / 16  # unit 1
    assert m["tanh/saturated_fraction"] == 2 / 16  # units 1 and 2; unit 0 is at a bound on ~64 %
    assert "relu/saturated_fraction" not in m and "lin/saturated_fraction" not in m  # unbounded
    top = result.tables["selective_neurons"].groupby("layer").head(1).set_index("layer")
    # ReLU(5 x0) is 0 on every class-0 example: the Morcos et al. index is exactly 1
    assert top.loc["relu", "neuron"] == 0 and top.loc["relu", "preferred_class"] == 1
    assert top.loc["relu", "selectivity"] == pytest.approx(1.0)
    assert m["relu/max_selectivity"] == pytest.approx(1.0)
    assert m["relu/selective_fraction"] >= 1 / 16
    assert (reporter.run_dir / "figures" / "0" / "neuron_stats" / "neurons.png").exists()
    assert (reporter.run_dir / "tables" / "0" / "neuron_stats" / "selective_neurons.csv").exists()


def test_selectivity_tests_and_corrections_match_scipy_and_statsmodels() -> None:
    probe, model = _probe(), _Units()
    result = nm.NeuronMap(probe, layers=["lin"], analyses=[NeuronStats(top_k=16)], reporters=[]).run(
        model, step=0).results["neuron_stats"]
    table = result.tables["selective_neurons"].set_index("neuron").sort_index()
    x, y = _layer(model, probe, "lin"), probe.labels
    varying = np.ptp(x, axis=0) > 0
    expected = np.full(16, np.nan)
    expected[varying] = [scipy.stats.kruskal(x[y == 0, j], x[y == 1, j]).pvalue for j in np.flatnonzero(varying)]
    np.testing.assert_allclose(table["p"], expected, rtol=1e-10)
    adjusted = np.full(16, np.nan)
    adjusted[varying] = multipletests(expected[varying], method="fdr_bh")[1]
    np.testing.assert_allclose(table["p_adj"], adjusted, rtol=1e-10)
    # the signed layer uses d' (Green & Swets): difference of class means over the pooled sd
    a, b = x[y == 1, 0], x[y == 0, 0]
    dprime = (a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert table.loc[0, "selectivity"] == pytest.approx(dprime)
    assert np.isnan(table.loc[1, "p"])  # a constant unit is not tested and not counted


def test_kurtosis_of_one_hot_activations_is_known() -> None:
    """A one-hot vector over d dims has excess kurtosis 1 / (p q) - 6 with p = 1 / d."""
    d = 16
    rows = np.eye(d)[np.random.default_rng(0).integers(0, d, 40)]
    probe = nm.ProbeSet(torch.tensor(rows, dtype=torch.float32), labels=[0, 1] * 20)
    result = nm.NeuronMap(probe, layers=["0"], analyses=[NeuronStats(target=None)], reporters=[]).run(
        nn.Sequential(nn.Identity()), step=0).results["neuron_stats"]
    p = 1 / d
    assert result.metrics["0/kurtosis"] == pytest.approx(1 / (p * (1 - p)) - 6)
    assert "selective_neurons" not in result.tables


def test_an_outlier_dimension_is_found_by_the_three_sigma_rule() -> None:
    """Kovaleva et al. (2021): one dimension 20x larger than the others."""
    scale = torch.ones(16)
    scale[5] = 20.0
    layer = nn.Linear(16, 16, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.diag(scale))
    probe = nm.ProbeSet(torch.randn(100, 16, generator=torch.Generator().manual_seed(1)), labels=[0, 1] * 50)
    result = nm.NeuronMap(probe, layers=["0"], analyses=[NeuronStats()], reporters=[]).run(
        nn.Sequential(layer), step=0).results["neuron_stats"]
    assert result.metrics["0/outlier_dims"] == 1
    assert result.tables["outlier_dims"]["dim"].tolist() == [5]
    assert result.metrics["0/kurtosis"] > 5


def test_explicit_bounds_apply_only_when_the_data_respect_them() -> None:
    probe, model = _probe(), _Units()
    inside = NeuronStats(bounds=(-1.0, 1.0), target=None)
    result = nm.NeuronMap(probe, layers=["tanh", "lin"], analyses=[inside], reporters=[]).run(model, step=0)
    metrics = result.results["neuron_stats"].metrics
    assert metrics["tanh/saturated_fraction"] == 2 / 16
    assert "lin/saturated_fraction" not in metrics  # values of +-100 lie outside (-1, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"selectivity": "ratio"},
         r"^NeuronStats: selectivity must be one of \['auto', 'dprime', 'index'\]; got 'ratio'\.$"),
        ({"test": "t"}, r"^NeuronStats: test must be one of \['anova', 'kruskal'\]; got 't'\.$"),
        ({"saturation_fraction": 1.0}, r"^NeuronStats: saturation_fraction must be a float in \(0, 1\); got 1\.0\.$"),
        ({"bounds": (1.0, -1.0)},
         r"^NeuronStats: bounds must be None or a \(low, high\) pair of floats with low < high; got \(1\.0, -1\.0\)"),
        ({"bounds": (0, "1")}, r"^NeuronStats: bounds must be None or a \(low, high\) pair"),
        ({"outlier_sigma": 0}, r"^NeuronStats: outlier_sigma must be a float in \(0, inf\); got 0\.$"),
        ({"top_k": 0}, r"^NeuronStats: top_k must be an int in \[1, inf\); got 0\.$"),
        ({"target": 3}, r"^NeuronStats: target must be None or a str; got 3\.$"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        NeuronStats(**kwargs)


def test_selectivity_is_skipped_with_a_note_for_a_single_class() -> None:
    probe = nm.ProbeSet(torch.randn(20, 8), labels=[3] * 20)
    result = nm.NeuronMap(probe, layers=["relu"], analyses=[NeuronStats(test="anova")], reporters=[]).run(
        _Units(), step=0).results["neuron_stats"]
    assert "relu/selective_fraction" not in result.metrics
    assert "needs at least 2 classes with 2 examples each; 'label' has counts {'3': 20}" in result.notes[0]


@pytest.mark.filterwarnings("error")
def test_every_analysis_survives_a_dead_layer_without_warnings() -> None:
    """A ReLU layer that is zero everywhere gives NaN or chance values and notes, never errors."""
    from neuronmap.analyses import CKA, RSA, Information, Probing, Projection
    from neuronmap.testing import tiny_mlp, tiny_probe

    model = tiny_mlp()
    with torch.no_grad():
        model.net[0].bias.fill_(-100.0)
    analyses = [Probing(n_permutations=99), CKA(), RSA(n_permutations=9), NeuronStats(),
                Information(n_permutations=9), Projection(methods=["pca"])]
    report = nm.NeuronMap(tiny_probe(n=60), layers=["net.0", "net.1"], analyses=analyses, reporters=[],
                          strict=True).run(model, step=0)
    assert all(r.status == "ok" for r in report.results.values())
    m = report.metrics
    assert m["neuronmap/neuron_stats/net.1/dead_fraction"] == 1.0
    assert m["neuronmap/probing/net.1/accuracy_p"] == 1.0  # every relabelling ties a constant layer
    assert m["neuronmap/information/net.1/mi_knn"] == 0.0
    assert np.isnan(m["neuronmap/cka/net.1/drift_first"])
    assert "net.1: fewer than 4 examples or constant activations; nothing to project." in \
        report.results["projection"].notes
