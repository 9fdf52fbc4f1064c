"""ModelPerformance: the model's own metrics against scikit-learn, its bootstrap twins, groups and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

import neuronmap as nm
from neuronmap.analyses.performance import _ece_fn, _f1_macro_fn, _mae, _r2
from neuronmap.testing import tiny_mlp


def _logits_probe(n: int = 240, classes: int = 3, seed: int = 0) -> tuple[nm.ProbeSet, nn.Module, np.ndarray]:
    """A linear classifier on Gaussian inputs, labels that it gets right about 70% of the time."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen)
    model = nn.Sequential(nn.Linear(5, 8), nn.Linear(8, classes))
    torch.manual_seed(seed)
    for layer in model:
        nn.init.normal_(layer.weight, generator=gen)
    with torch.no_grad():
        logits = model(x).numpy()
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < 0.7, logits.argmax(1), rng.integers(0, classes, n))
    sites = np.array(["north", "south", "east"])[np.arange(n) % 3]
    sites[:5] = "tiny"  # a group below min_group_size
    probe = nm.ProbeSet(x, labels=labels, groups={"site": sites}, name="cls")
    return probe, model, logits


def _run(probe: nm.ProbeSet, model: nn.Module, **kwargs: object) -> nm.AnalysisResult:
    analysis = nm.ModelPerformance(n_resamples=300, **kwargs)  # type: ignore[arg-type]
    monitor = nm.NeuronMap(probe, layers=["0"], analyses=[analysis], reporters=[])
    report = monitor.run(model, step=0)
    result = report.results["performance"]
    assert result.status == "ok", result.error
    return result


def _ece_reference(correct: np.ndarray, confidence: np.ndarray, bins: int = 10) -> float:
    """Guo et al. 2017, eq. 3, written out plainly."""
    total = 0.0
    edges = np.linspace(0, 1, bins + 1)
    for b in range(bins):
        upper = confidence <= edges[b + 1] if b == bins - 1 else confidence < edges[b + 1]
        in_bin = (confidence >= edges[b]) & upper
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def test_classification_metrics_match_scikit_learn_overall_and_per_group() -> None:
    probe, model, logits = _logits_probe()
    result = _run(probe, model)
    m = result.metrics
    y, pred = probe.column("label"), logits.argmax(1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert m["overall/accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["overall/f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["overall/calibration_error"] == pytest.approx(_ece_reference((y == pred).astype(float), probs.max(1)))
    assert m["overall/n"] == 240
    assert m["overall/accuracy_ci_low"] <= m["overall/accuracy"] <= m["overall/accuracy_ci_high"]
    sites = probe.column("site")
    for site in ("north", "south", "east"):
        mask = sites == site
        assert m[f"site.{site}/n"] == mask.sum()
        assert m[f"site.{site}/accuracy"] == pytest.approx(skm.accuracy_score(y[mask], pred[mask]))
    assert "site.tiny/accuracy" not in m  # 5 examples < min_group_size: its size is listed, no estimate
    by_group = result.tables["by_group"]
    tiny = by_group[by_group["group"] == "tiny"]
    assert tiny["n"].tolist() == [5] and tiny["estimate"].isna().all()
    assert any("site=tiny: 5 examples" in note for note in result.notes)
    per_class = result.tables["per_class"]
    assert per_class["support"].sum() == 240
    assert per_class["f1"].to_numpy() == pytest.approx(skm.f1_score(y, pred, average=None))


def test_vectorised_bootstrap_twins_equal_the_plain_formulas() -> None:
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 4, (6, 50)).astype(float), rng.integers(0, 4, (6, 50)).astype(float)
    f1 = _f1_macro_fn(np.arange(4.0))(y, p, axis=-1)
    for row in range(6):
        expected = skm.f1_score(y[row], p[row], average="macro", labels=np.arange(4), zero_division=0)
        assert f1[row] == pytest.approx(expected)
    t, q = rng.normal(size=(6, 50)), rng.normal(size=(6, 50))
    assert _r2(t, q, axis=-1) == pytest.approx([skm.r2_score(t[i], q[i]) for i in range(6)])
    assert _mae(t, q, axis=-1) == pytest.approx([skm.mean_absolute_error(t[i], q[i]) for i in range(6)])
    conf = rng.uniform(0.25, 1.0, 200)
    correct = (rng.random(200) < conf).astype(float)
    bins = np.minimum((conf * 10).astype(int), 9).astype(float)
    assert _ece_fn(10)(correct, conf, bins) == pytest.approx(_ece_reference(correct, conf))


def test_regression_r2_and_mae() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(120, 4, generator=gen)
    model = nn.Linear(4, 1)
    with torch.no_grad():
        out = model(x).numpy().ravel()
    target = out + np.random.default_rng(3).normal(0, 0.3, 120)
    probe = nm.ProbeSet(x, labels=target, name="reg")
    monitor = nm.NeuronMap(probe, layers=["re:.*"], analyses=[nm.ModelPerformance(n_resamples=200)], reporters=[])
    m = monitor.run(nn.Sequential(model), step=0).metrics
    assert m["neuronmap/performance/overall/r2"] == pytest.approx(skm.r2_score(target, out), rel=1e-6)
    assert m["neuronmap/performance/overall/mae"] == pytest.approx(skm.mean_absolute_error(target, out), rel=1e-6)
    assert "neuronmap/performance/overall/accuracy" not in m


def test_errors_name_what_was_received() -> None:
    with pytest.raises(nm.InvalidParameterError,
                       match=r"ModelPerformance: task must be one of \[.*'classification'.*\]; got 'ranking'"):
        nm.ModelPerformance(task="ranking")  # type: ignore[arg-type]
    with pytest.raises(nm.InvalidParameterError,
                       match=r"ModelPerformance: n_resamples must be an int in \[1, inf\); got 0"):
        nm.ModelPerformance(n_resamples=0)
    probe = nm.ProbeSet(torch.randn(20, 8), name="unlabelled")
    monitor = nm.NeuronMap(probe, layers=["net.0"], analyses=[nm.ModelPerformance()], reporters=[], strict=True)
    with pytest.raises(nm.errors.AnalysisError, match=r"has no 'label' column"):
        monitor.run(tiny_mlp(), step=0)


def test_registered_and_exported() -> None:
    from neuronmap.analyses import available_analyses, get_analysis

    assert "performance" in available_analyses()
    assert isinstance(get_analysis("performance"), nm.ModelPerformance)
