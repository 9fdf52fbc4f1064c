"""RepresentationBias: WEAT against Caliskan's formula by hand, planted decodability, sklearn probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

import neuronmap as nm
from neuronmap.analyses.representation_bias import RepresentationBias, weat_effect_size, weat_test
from neuronmap.errors import AnalysisError, InvalidParameterError, ProbeSetError
from neuronmap.reporters import LocalReporter

KEY = "neuronmap/representation_bias/{}/{}".format


class TwoLayers(nn.Module):
    """``leaky`` copies the input (feature 0 is the group); ``blind`` zeroes feature 0 first."""

    def __init__(self) -> None:
        super().__init__()
        self.leaky = nn.Identity()
        self.blind = nn.Linear(6, 6, bias=False)
        with torch.no_grad():
            self.blind.weight.copy_(torch.eye(6))
            self.blind.weight[0, 0] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.leaky(x) + self.blind(x)


def _probe(n: int = 160, *, seed: int = 0, tags: bool = True) -> nm.ProbeSet:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 6))
    x[:, 0] += 2.0 * group
    weat = np.full(n, "", dtype=object)
    if tags:
        # targets X lean on direction e1 like attribute A; Y on e2 like B
        base = {"target_x": 1, "target_y": 2, "attr_a": 1, "attr_b": 2}
        for k, (tag, axis) in enumerate(base.items()):
            rows = np.arange(k * 8, k * 8 + 8)
            x[rows] = 0.3 * rng.normal(size=(8, 6))
            x[rows, axis] += 2.0
            weat[rows] = tag
    meta = {"weat": weat} if tags else None
    return nm.ProbeSet(torch.tensor(x, dtype=torch.float32), labels=group, metadata=meta,
                       groups={"gender": np.where(group == 1, "f", "m"), "noise": rng.integers(0, 2, n)})


def _run(analysis: RepresentationBias, probe: nm.ProbeSet, tmp_path=None) -> nm.Report:
    reporters = [LocalReporter(tmp_path, run_name="run")] if tmp_path is not None else []
    monitor = nm.NeuronMap(probe, layers=["leaky", "blind"], analyses=[analysis], reporters=reporters, strict=True)
    return monitor.run(TwoLayers(), step=0)


def test_planted_weat_association_is_large_positive_and_significant(tmp_path) -> None:
    probe = _probe()
    report = _run(RepresentationBias("gender", n_permutations=199), probe, tmp_path)
    m = report.metrics
    leaky = probe.inputs["input"].double().numpy()
    tags = probe.column("weat")
    sets = [leaky[tags == t] for t in ("target_x", "target_y", "attr_a", "attr_b")]
    # the old import path re-exports neuronmap.metrics.bias, whose tests check it against the formula by hand
    assert m[KEY("leaky", "weat_effect_size")] == pytest.approx(weat_effect_size(*sets), rel=1e-5)
    assert m[KEY("leaky", "weat_effect_size")] > 1.5  # planted: X with A, Y with B (max is 2 for equal sizes)
    assert m[KEY("leaky", "weat_effect_size_p_adj")] < 0.05
    effect, p = weat_test(*sets, n_permutations=199)
    assert effect == pytest.approx(m[KEY("leaky", "weat_effect_size")], rel=1e-5) and p <= 0.01
    assert (tmp_path / "run" / "figures" / "0" / "representation_bias" / "decodability.png").stat().st_size > 0


def test_decodability_flags_the_leaky_layer_only_and_equals_sklearn_ridge() -> None:
    probe = _probe(tags=False)
    report = _run(RepresentationBias(["gender", "noise"], n_permutations=199), probe)
    m = report.metrics
    assert m[KEY("leaky", "gender_decodability_p_adj")] < 0.05
    assert m[KEY("leaky", "gender_decodability")] > m[KEY("leaky", "gender_majority_baseline")] + 0.2
    assert m[KEY("blind", "gender_decodability_p_adj")] > 0.05
    assert m[KEY("leaky", "noise_decodability_p_adj")] > 0.05
    assert m[KEY("leaky", "gender_centroid_distance_p_adj")] < 0.05
    assert m[KEY("blind", "gender_centroid_distance_p_adj")] > 0.05
    assert any("WEAT skipped" in n for n in report.results["representation_bias"].notes)
    # peer library: the same ridge probe on the same folds
    x = probe.inputs["input"].double().numpy()
    y = (probe.column("gender") == "m").astype(int)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    pred = cross_val_predict(make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0)), x, y, cv=folds)
    assert m[KEY("leaky", "gender_decodability")] == pytest.approx(np.mean(pred == y))
    low, high = m[KEY("leaky", "gender_decodability_ci_low")], m[KEY("leaky", "gender_decodability_ci_high")]
    assert low < m[KEY("leaky", "gender_decodability")] < high


def test_centroid_distance_equals_hand_computation() -> None:
    probe = _probe(tags=False)
    m = _run(RepresentationBias("gender", n_permutations=9, layers="leaky"), probe).metrics
    x = probe.inputs["input"].double().numpy()
    g = probe.column("gender")
    mu = {k: x[g == k].mean(axis=0) for k in ("f", "m")}
    spread = np.mean([np.trace(np.cov(x[g == k].T, bias=True)) for k in ("f", "m")])
    assert m[KEY("leaky", "gender_centroid_distance")] == pytest.approx(
        np.linalg.norm(mu["f"] - mu["m"]) / np.sqrt(spread))


def test_bad_inputs() -> None:
    probe = _probe(tags=False)
    with pytest.raises(AnalysisError, match=r"'race' not found.*it has \[") as info:
        _run(RepresentationBias("race"), probe)
    assert isinstance(info.value.__cause__, ProbeSetError)
    with pytest.raises(AnalysisError, match=r"need the column 'weat'") as info:
        _run(RepresentationBias("gender", targets=("career", "family")), probe)
    assert isinstance(info.value.__cause__, ProbeSetError)
    with pytest.raises(InvalidParameterError, match=r"RepresentationBias: targets must be two tag strings; got \("):
        RepresentationBias("gender", targets=("x",))  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match=r"RepresentationBias: cv must be an int in \[2, inf\); got 1"):
        RepresentationBias("gender", cv=1)
