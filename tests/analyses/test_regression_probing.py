"""RegressionProbing, WorldModelProbe and CrossLingualAlignment on planted signals and nulls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import neuronmap as nm
from neuronmap.analyses.world_model import haversine_km
from neuronmap.errors import AnalysisError, InvalidParameterError
from neuronmap.presets import events, places


class _Planted(nn.Module):
    """``signal`` sees feature 0 (the target); ``noise`` has its weights on feature 0 zeroed."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.signal, self.noise = nn.Linear(d, 12), nn.Linear(d, 12)
        with torch.no_grad():
            self.noise.weight[:, 0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.signal(x) + self.noise(x)


def _probe(n: int, seed: int) -> nm.ProbeSet:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return nm.ProbeSet(torch.from_numpy(x), metadata={
        "size": 3 * x[:, 0] + 0.3 * rng.standard_normal(n), "null": rng.standard_normal(n),
        "region": np.array(["a", "b", "c", "d"])[np.arange(n) % 4]})  # fmt: skip


def _run(probe: nm.ProbeSet, analysis: nm.Analysis, model: nn.Module | None = None) -> nm.Report:
    torch.manual_seed(0)
    return nm.NeuronMap(probe, layers=["signal", "noise"], analyses=[analysis], reporters=[]).run(
        model or _Planted(), step=0)


def test_planted_target_is_recovered_only_where_it_was_planted():
    analysis = nm.RegressionProbing(["size", "null"], holdout_column="region", n_permutations=199, n_resamples=200)
    report = _run(_probe(160, 0), analysis)
    table = report.results["regression_probing"].tables["regression_probing"].set_index(["layer", "target"])
    hit = table.loc[("signal", "size")]
    assert hit.r2 > 0.95 and hit.r2_ci_low > 0.9 and hit.p_adj < 0.05 and hit.significant
    assert hit.holdout_r2 > 0.9 and hit.selectivity > 0.9
    assert abs(hit.control_r2) < 0.1 and hit.random_feature_r2 < 0.1
    for key in [("noise", "size"), ("signal", "null"), ("noise", "null")]:
        assert table.loc[key].r2 < 0.1 and not table.loc[key].significant
    m = report.metrics
    assert m["neuronmap/regression_probing/signal/size_r2"] == pytest.approx(hit.r2)
    assert {"neuronmap/regression_probing/signal/size_r2_p_adj",
            "neuronmap/regression_probing/signal/size_holdout_r2_ci_low"} <= set(m)  # fmt: skip
    assert "r2" in report.results["regression_probing"].figures


def test_null_p_values_are_calibrated():
    # 40 independent null data sets: the permutation p-value is uniform, so about 5 % fall below 0.05
    rng = np.random.default_rng(5)
    pvalues = []
    for seed in range(40):
        x = rng.standard_normal((40, 6))
        probe = nm.ProbeSet(torch.tensor(x, dtype=torch.float32), metadata={"y": rng.standard_normal(40)})
        analysis = nm.RegressionProbing("y", n_permutations=99, n_resamples=20, control_task=False,
                                        random_features=False)
        report = nm.NeuronMap(probe, layers=["0"], analyses=[analysis], reporters=[], random_state=seed).run(
            nn.Sequential(nn.Identity()), step=0)
        pvalues.append(report.results["regression_probing"].tables["regression_probing"].p.iloc[0])
    pvalues = np.array(pvalues)
    assert (pvalues < 0.05).sum() <= 6  # P(Binomial(40, 0.05) > 6) < 0.01
    assert 0.35 < pvalues.mean() < 0.65


def test_world_model_space_recovers_coordinates_and_draws_a_map():
    frame = places().frame
    coords = frame[["latitude", "longitude"]].to_numpy() / np.array([90.0, 180.0])
    rng = np.random.default_rng(1)
    x = np.hstack([coords, rng.standard_normal((len(frame), 6))]).astype(np.float32)
    probe = nm.ProbeSet(torch.from_numpy(x), metadata=frame)
    model = nn.Sequential(nn.Linear(8, 16))
    analysis = nm.WorldModelProbe("space", n_permutations=99, n_resamples=100)
    report = nm.NeuronMap(probe, layers=["0"], analyses=[analysis], reporters=[]).run(model, step=0)
    result = report.results["world_model"]
    assert result.status == "ok", result.error
    table = result.tables["world_model"].set_index("target")
    assert table.loc["latitude", "r2"] > 0.99 and table.loc["longitude", "r2"] > 0.99
    assert table.loc["latitude", "holdout_r2"] > 0.9  # a linear map extrapolates to unseen continents
    assert result.tables["distance"].error_km.iloc[0] < 100
    assert {"r2", "map"} == set(result.figures)
    assert report.metrics["neuronmap/world_model/0/error_km"] < 100


def test_world_model_time_null_is_not_significant():
    frame = events().frame
    probe = nm.ProbeSet(torch.randn(len(frame), 8), metadata=frame)
    analysis = nm.WorldModelProbe("time", n_permutations=199, n_resamples=50)
    report = nm.NeuronMap(probe, layers=["0"], analyses=[analysis], reporters=[]).run(
        nn.Sequential(nn.Linear(8, 8)), step=0)
    row = report.results["world_model"].tables["world_model"].iloc[0]
    assert row.r2 < 0.1 and row.p > 0.01
    assert "years" in report.results["world_model"].figures


def test_haversine_known_distances():
    assert float(haversine_km(0, 0, 0, 180)) == pytest.approx(np.pi * 6371.0088)
    assert float(haversine_km(40.71, -74.01, 51.51, -0.13)) == pytest.approx(5570, rel=0.01)  # New York - London


def test_crosslingual_alignment_planted_and_null():
    rng = np.random.default_rng(2)
    base = rng.standard_normal((30, 8))
    blocks = {"en": base, "de": base + 0.05 * rng.standard_normal((30, 8)), "xx": rng.standard_normal((30, 8))}
    x = np.vstack(list(blocks.values())).astype(np.float32)
    meta = pd.DataFrame({"language": np.repeat(list(blocks), 30), "pair_id": np.tile(np.arange(30), 3)})
    probe = nm.ProbeSet(torch.from_numpy(x), metadata=meta)
    report = nm.NeuronMap(probe, layers=["0"], reporters=[],
                          analyses=[nm.CrossLingualAlignment(n_permutations=199, n_resamples=100)]).run(
        nn.Sequential(nn.Identity()), step=0)  # fmt: skip
    table = report.results["crosslingual"].tables["alignment"].set_index("language")
    assert table.loc["de", "retrieval"] == 1.0 and table.loc["de", "retrieval_p_adj"] < 0.05
    assert table.loc["de", "cka"] > 0.95
    assert ((table.cka_ci_low <= table.cka) & (table.cka <= table.cka_ci_high)).all()
    assert table.loc["xx", "retrieval"] < 0.2 and table.loc["xx", "retrieval_p"] > 0.05
    assert report.metrics["neuronmap/crosslingual/0/mean_retrieval"] == pytest.approx(table.retrieval.mean())


def test_errors():
    with pytest.raises(InvalidParameterError, match=r"WorldModelProbe: kind must be one of \['space', 'time'\]"):
        nm.WorldModelProbe("depth")
    with pytest.raises(InvalidParameterError, match=r"WorldModelProbe: targets must be two columns .*; got \['x'\]"):
        nm.WorldModelProbe("space", targets=["x"])
    with pytest.raises(InvalidParameterError, match=r"RegressionProbing: cv must be an int in \[2, inf\); got 1"):
        nm.RegressionProbing("y", cv=1)
    with pytest.raises(InvalidParameterError, match=r"RegressionProbing: target must be a column name or a non-empty"):
        nm.RegressionProbing([])
    probe = nm.ProbeSet(torch.randn(20, 8), metadata={"word": ["a"] * 20})
    with pytest.raises(AnalysisError, match=r"Target 'word' .* has no numeric value"):
        nm.NeuronMap(probe, layers=["signal"], analyses=[nm.RegressionProbing("word")], reporters=[],
                     strict=True).run(_Planted(), step=0)  # fmt: skip
    with pytest.raises(AnalysisError, match=r"needs columns \['language', 'pair_id'\]"):
        nm.NeuronMap(probe, layers=["signal"], analyses=[nm.CrossLingualAlignment()], reporters=[],
                     strict=True).run(_Planted(), step=0)  # fmt: skip


@pytest.mark.parametrize("cls", [nm.RegressionProbing, nm.WorldModelProbe, nm.CrossLingualAlignment])
def test_n_bootstrap_is_a_deprecated_name_of_n_resamples(cls: type) -> None:
    with pytest.warns(FutureWarning, match=rf"{cls.__name__}\(n_bootstrap=...\) is deprecated .* use n_resamples="):
        analysis = cls(n_bootstrap=123)
    assert analysis.n_resamples == 123


def test_world_model_keeps_its_arguments_and_resolves_defaults_at_run_time():
    analysis = nm.WorldModelProbe("time", holdout_column="")
    assert (analysis.targets, analysis.holdout_column) == (None, "")
    assert analysis._target_columns() == ["year"] and analysis._wanted_holdout() is None
    assert nm.WorldModelProbe("space")._wanted_holdout() == "region"
