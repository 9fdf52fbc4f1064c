from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _planted import LAYERS, planted_model, planted_probe
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr

import neuronmap as nm
from neuronmap.analyses.similarity import CKA, RSA, compare_models
from neuronmap.errors import AnalysisFailedWarning, InvalidParameterError
from neuronmap.reporters import LocalReporter
from neuronmap.testing import tiny_mlp, tiny_probe


def _reference_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019), eq. 1 on centred features, written out independently."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _acts(model: torch.nn.Module, probe: nm.ProbeSet, layers: list[str]) -> dict[str, np.ndarray]:
    monitor = nm.NeuronMap(probe, layers=layers, reporters=[])
    return {k: np.asarray(v, dtype=np.float64) for k, v in monitor.capture_activations(model).items()}


def test_cka_heatmap_is_symmetric_with_unit_diagonal_and_matches_the_formula(tmp_path) -> None:
    probe, model = tiny_probe(n=80), tiny_mlp()
    reporter = LocalReporter(tmp_path, run_name="run")
    monitor = nm.NeuronMap(probe, layers=["net.*"], analyses=[CKA(drift=False)], reporters=[reporter], strict=True)
    result = monitor.run(model, step=0).results["cka"]
    matrix = result.tables["cka"].set_index("layer")
    assert list(matrix.index) == list(matrix.columns) == ["net.0", "net.1", "net.2", "net.3", "net.4"]
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix.to_numpy(), matrix.to_numpy().T, atol=1e-12)
    acts = _acts(model, probe, ["net.*"])
    assert matrix.loc["net.0", "net.3"] == pytest.approx(_reference_cka(acts["net.0"], acts["net.3"]), abs=1e-10)
    assert not result.metrics  # drift off: the matrix is a table and a figure, not L^2 metrics
    assert (reporter.run_dir / "figures" / "0" / "cka" / "heatmap.png").stat().st_size > 0


def test_drift_is_one_at_the_first_run_below_one_after_training_and_tracked_over_steps(tmp_path) -> None:
    probe, model = tiny_probe(n=80), tiny_mlp()
    reporter = LocalReporter(tmp_path, run_name="run")
    monitor = nm.NeuronMap(probe, layers=["net.0", "net.2"], analyses=[CKA()], reporters=[reporter], strict=True)
    first = monitor.run(model, step=0).metrics
    assert first["neuronmap/cka/net.0/drift_first"] == pytest.approx(1.0)
    assert "neuronmap/cka/net.0/drift_previous" not in first
    before = _acts(model, probe, ["net.2"])["net.2"]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    after = _acts(model, probe, ["net.2"])["net.2"]
    second = monitor.run(model, step=10).metrics
    assert second["neuronmap/cka/net.2/drift_first"] == pytest.approx(_reference_cka(after, before), abs=1e-6)
    assert second["neuronmap/cka/net.2/drift_first"] < 0.95
    third = monitor.run(model, step=20).metrics  # unchanged weights
    assert third["neuronmap/cka/net.2/drift_previous"] == pytest.approx(1.0)
    assert third["neuronmap/cka/net.2/drift_first"] == pytest.approx(second["neuronmap/cka/net.2/drift_first"])
    history = monitor.history.series("neuronmap/cka/net.2/drift_first")
    assert list(history.index) == [0, 10, 20]
    for step in (0, 10, 20):
        assert (reporter.run_dir / "figures" / str(step) / "cka" / "drift.png").exists()


@pytest.mark.parametrize("device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])
def test_cka_on_a_torch_device_equals_numpy(device: str) -> None:
    probe, model = tiny_probe(n=60), tiny_mlp()
    numpy_run = nm.NeuronMap(probe, layers=["net.*"], analyses=[CKA(device=None)], reporters=[], strict=True)
    torch_run = nm.NeuronMap(
        probe, layers=["net.*"], analyses=[CKA(device=device)], reporters=[], strict=True, device=device
    )
    for step in (0, 1):
        expected, got = numpy_run.run(model, step=step), torch_run.run(model.to(device), step=step)
        assert got.metrics.keys() == expected.metrics.keys()
        for key, value in expected.metrics.items():
            assert got.metrics[key] == pytest.approx(value, abs=1e-6), key
        pd.testing.assert_frame_equal(got.results["cka"].tables["cka"], expected.results["cka"].tables["cka"],
                                      atol=1e-6)
        model = model.cpu()


def test_cka_rejects_a_device_torch_cannot_use() -> None:
    with pytest.raises(InvalidParameterError, match=r"^CKA: device must be a torch device.*got 'gpu'"):
        CKA(device="gpu")


def test_drift_ignores_orthogonal_changes_of_a_layer() -> None:
    """CKA is invariant to orthogonal transforms (Kornblith et al. 2019, Sec. 2.1)."""
    probe, model = tiny_probe(n=80), tiny_mlp()
    monitor = nm.NeuronMap(probe, layers=["net.0", "net.1"], analyses=[CKA()], reporters=[])
    monitor.run(model, step=0)
    q = torch.linalg.qr(torch.randn(16, 16))[0]
    with torch.no_grad():  # rotate the first Linear's output: net.0 changes only by q, ReLU(net.0) really changes
        model.net[0].weight.copy_(q @ model.net[0].weight)
        model.net[0].bias.copy_(q @ model.net[0].bias)
    metrics = monitor.run(model, step=1).metrics
    assert metrics["neuronmap/cka/net.0/drift_first"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["neuronmap/cka/net.1/drift_first"] < 0.99


def test_resumed_runs_restart_the_drift_reference_with_a_note() -> None:
    probe, model = tiny_probe(n=40), tiny_mlp()
    monitor = nm.NeuronMap(probe, layers=["net.0"], analyses=[CKA()], reporters=[])
    monitor.run(model, step=3)
    state = monitor.state_dict()
    assert state["analyses"]["cka"] == {"reference_step": 3, "previous_step": 3}
    resumed = nm.NeuronMap(probe, layers=["net.0"], analyses=[CKA()], reporters=[])
    resumed.load_state_dict(state)
    with torch.no_grad():
        model.net[0].weight.add_(1.0)
    result = resumed.run(model, step=7).results["cka"]
    assert result.metrics["net.0/drift_first"] == pytest.approx(1.0)
    assert any("restarted at step 7 after a resume (the original reference was step 3" in n for n in result.notes)


def test_rsa_with_a_label_rdm_is_significant_where_the_label_is_encoded(tmp_path) -> None:
    probe, model = planted_probe(n=100), planted_model()
    reporter = LocalReporter(tmp_path, run_name="run")
    monitor = nm.NeuronMap(probe, layers=LAYERS, analyses=[RSA(n_permutations=199)], reporters=[reporter],
                           strict=True)
    metrics = monitor.run(model, step=0).metrics
    acts = _acts(model, probe, ["signal"])["signal"]
    expected = spearmanr(pdist(acts, "correlation"), pdist(probe.labels[:, None].astype(float), "hamming"))
    assert metrics["neuronmap/rsa/signal/rsa"] == pytest.approx(expected.statistic, abs=1e-10)
    assert metrics["neuronmap/rsa/signal/rsa_p_adj"] < 0.05
    assert metrics["neuronmap/rsa/noise_a/rsa_p_adj"] > 0.05
    assert metrics["neuronmap/rsa/noise_b/rsa_p_adj"] > 0.05
    assert (reporter.run_dir / "figures" / "0" / "rsa" / "rsa.png").exists()


def test_rsa_against_a_reference_layer_and_its_errors() -> None:
    probe, model = planted_probe(n=60), planted_model()
    monitor = nm.NeuronMap(probe, layers=LAYERS, reporters=[],
                           analyses=[RSA(reference_layer="signal", metric="euclidean", n_permutations=0)])
    result = monitor.run(model, step=0).results["rsa"]
    acts = _acts(model, probe, ["signal", "noise_a"])
    expected = spearmanr(pdist(acts["noise_a"]), pdist(acts["signal"])).statistic
    assert result.metrics["noise_a/rsa"] == pytest.approx(expected, abs=1e-10)
    assert "noise_a/rsa_p" not in result.metrics  # no permutations, no p-value
    assert result.tables["rsa"].set_index("layer").loc["signal", "note"] == "reference layer"
    bad = nm.NeuronMap(probe, layers=["noise_a"], reporters=[], analyses=[RSA(reference_layer="signal")])
    with pytest.warns(AnalysisFailedWarning, match=r"reference_layer 'signal' was not captured; captured layers: "):
        assert bad.run(model, step=0).results["rsa"].status == "failed"


def test_rsa_skips_a_single_class_and_notes_undefined_layers() -> None:
    probe = nm.ProbeSet(torch.randn(30, 8), labels=[1] * 30)
    result = nm.NeuronMap(probe, layers=["signal"], analyses=[RSA()], reporters=[]).run(planted_model(), step=0)
    assert result.results["rsa"].status == "skipped"
    assert "RDM is constant" in result.results["rsa"].notes[0]
    model = tiny_mlp()
    with torch.no_grad():
        model.net[0].bias.fill_(-100.0)  # net.1 = ReLU(...) is all zero: correlation distance undefined
    result = nm.NeuronMap(tiny_probe(n=30), layers=["net.0", "net.1"], analyses=[RSA(n_permutations=9)],
                          reporters=[]).run(model, step=0).results["rsa"]
    assert result.status == "ok"
    assert "net.1/rsa" not in result.metrics and "net.0/rsa" in result.metrics
    assert any(n.startswith("net.1: The correlation distance is undefined for constant rows") for n in result.notes)


def test_compare_models_is_the_cross_model_cka_matrix() -> None:
    probe = tiny_probe(n=50)
    a = _acts(tiny_mlp(seed=0), probe, ["net.0", "net.2"])
    b = _acts(tiny_mlp(seed=1), probe, ["net.0", "net.2", "net.4"])
    frame = compare_models(a, b)
    assert isinstance(frame, pd.DataFrame) and frame.shape == (2, 3)
    assert list(frame.index) == ["net.0", "net.2"] and list(frame.columns) == ["net.0", "net.2", "net.4"]
    assert frame.loc["net.2", "net.4"] == pytest.approx(_reference_cka(a["net.2"], b["net.4"]), abs=1e-10)
    np.testing.assert_allclose(np.diag(compare_models(a, a)), 1.0)
    with pytest.raises(InvalidParameterError, match=r"same probe set; got example counts \[40, 50\]"):
        compare_models({"x": a["net.0"][:40]}, b)
    with pytest.raises(InvalidParameterError, match=r"needs layers on both sides; got 2 and 0"):
        compare_models(a, {})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "manhattan"}, r"RSA: metric must be one of \['correlation', 'cosine', 'euclidean'\]; "
                                  r"got 'manhattan'\.$"),
        ({"method": "rank"}, r"RSA: method must be one of \['kendall', 'pearson', 'spearman'\]; got 'rank'\.$"),
        ({"n_permutations": -5}, r"RSA: n_permutations must be an int in \[0, inf\); got -5"),
        ({"max_examples": 2}, r"RSA: max_examples must be None or an int in \[4, inf\); got 2\.$"),
        ({"p_adjust": "bh"}, r"RSA: p_adjust must be one of \[.*'holm'.*\]; got 'bh'\.$"),
        ({"alpha": 1.0}, r"RSA: alpha must be a float in \(0, 1\); got 1\.0\.$"),
    ],
)
def test_rsa_rejects_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        RSA(**kwargs)
