from __future__ import annotations

import re
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from _planted import LAYERS, planted_model, planted_probe
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

import neuronmap as nm
from neuronmap.analyses.probing import Probing
from neuronmap.errors import AnalysisFailedWarning, InvalidParameterError
from neuronmap.reporters import LocalReporter


def _run(analysis: Probing, probe: nm.ProbeSet, model: nn.Module, layers: list[str], tmp_path=None):
    reporters = [LocalReporter(tmp_path, run_name="run")] if tmp_path is not None else []
    monitor = nm.NeuronMap(probe, layers=layers, analyses=[analysis], reporters=reporters, strict=True)
    return monitor.run(model, step=0), reporters


def test_planted_signal_is_significant_in_its_layer_only_after_correction(tmp_path) -> None:
    report, (reporter,) = _run(Probing(n_permutations=199), planted_probe(), planted_model(), LAYERS, tmp_path)
    m = report.metrics
    key = "neuronmap/probing/{}/accuracy{}".format
    assert m[key("signal", "")] > 0.9
    assert m[key("signal", "_ci_low")] <= m[key("signal", "")] <= m[key("signal", "_ci_high")]
    # 1 / (199 + 1) is the smallest permutation p-value; Holm over three layers triples it
    assert m[key("signal", "_p")] == pytest.approx(1 / 200)
    assert m[key("signal", "_p_adj")] < 0.05
    for layer in ("noise_a", "noise_b"):
        assert m[key(layer, "_p_adj")] > 0.05
        assert m[key(layer, "_ci_low")] < 0.65  # the majority class is about 0.6
    table = report.results["probing"].tables["probing"]
    assert table["significant"].tolist() == [True, False, False]
    assert (reporter.run_dir / "figures" / "0" / "probing" / "accuracy.png").stat().st_size > 0
    assert (reporter.run_dir / "tables" / "0" / "probing" / "probing.csv").exists()


def test_default_probe_equals_sklearn_pipeline_on_the_same_folds() -> None:
    probe, model = planted_probe(n=120), planted_model()
    report, _ = _run(Probing(n_permutations=0, control_task=False), probe, model, ["signal"])
    with torch.no_grad():
        x = model.signal(probe.inputs["input"]).numpy().astype(np.float64)
    y = probe.labels
    cv = StratifiedKFold(5, shuffle=True, random_state=0)  # the engine's default random_state
    pred = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)), x, y, cv=cv)
    # warm starts across folds reach the same (unique) optimum up to the solver's tolerance
    assert report.metrics["neuronmap/probing/signal/accuracy"] == pytest.approx(np.mean(pred == y), abs=1 / 120)
    assert report.metrics["neuronmap/probing/signal/macro_f1"] == pytest.approx(
        f1_score(y, pred, average="macro"), abs=0.01)


def test_centred_probe_is_sklearns_default_logistic_regression_on_raw_activations() -> None:
    """Centring is absorbed by the unpenalised intercept, so the optimum is unchanged."""
    probe, model = planted_probe(n=120), planted_model()
    report, _ = _run(Probing(standardize=False, n_permutations=0, control_task=False), probe, model, ["noise_a"])
    with torch.no_grad():
        x = 10.0 + model.noise_a(probe.inputs["input"]).numpy().astype(np.float64)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    pred = cross_val_predict(LogisticRegression(max_iter=10_000, tol=1e-8), x, probe.labels, cv=cv)
    assert report.metrics["neuronmap/probing/noise_a/accuracy"] == pytest.approx(np.mean(pred == probe.labels),
                                                                                abs=1 / 120)


def test_custom_estimator_is_cloned_per_fold_like_cross_val_predict() -> None:
    probe, model = planted_probe(n=100), planted_model()
    knn = KNeighborsClassifier(n_neighbors=5)
    report, _ = _run(Probing(estimator=knn, n_permutations=0, control_task=False), probe, model, ["noise_a"])
    with torch.no_grad():
        x = model.noise_a(probe.inputs["input"]).numpy().astype(np.float64)
    pred = cross_val_predict(knn, x, probe.labels, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    assert report.metrics["neuronmap/probing/noise_a/accuracy"] == pytest.approx(np.mean(pred == probe.labels))
    assert not hasattr(knn, "classes_")  # the user's instance was never fitted


class _Types(nn.Module):
    """``identity`` keeps which word type an example is; ``label_only`` keeps only its label."""

    def __init__(self, label_of_type: np.ndarray) -> None:
        super().__init__()
        n_types = len(label_of_type)
        self.identity = nn.Linear(n_types + 4, 32)
        self.label_only = nn.Linear(n_types + 4, 8)
        with torch.no_grad():
            direction = torch.randn(8)
            self.label_only.weight.zero_()
            self.label_only.weight[:, :n_types] = torch.outer(direction, torch.as_tensor(2.0 * label_of_type - 1))
            self.label_only.weight[:, n_types:] = 0.3 * torch.randn(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.identity(x).sum() + self.label_only(x).sum()


def test_control_task_selectivity_separates_memorising_from_encoding_the_label() -> None:
    """Hewitt & Liang (2019): a layer that identifies word types can fit random per-type labels."""
    n_types, repeats = 16, 10
    rng = np.random.default_rng(0)
    label_of_type = np.arange(n_types) % 2
    types = np.repeat(np.arange(n_types), repeats)
    x = np.hstack([np.eye(n_types)[types], rng.normal(size=(len(types), 4))])
    probe = nm.ProbeSet(torch.tensor(x, dtype=torch.float32), labels=label_of_type[types],
                        metadata={"word": [f"w{t}" for t in types]})
    report, _ = _run(Probing(control_column="word", n_permutations=0), probe, _Types(label_of_type),
                     ["identity", "label_only"])
    m = report.metrics
    assert m["neuronmap/probing/identity/accuracy"] > 0.95 and m["neuronmap/probing/label_only/accuracy"] > 0.95
    assert m["neuronmap/probing/identity/control_accuracy"] > 0.9
    assert m["neuronmap/probing/label_only/control_accuracy"] < 0.75
    assert m["neuronmap/probing/label_only/selectivity_ci_low"] > m["neuronmap/probing/identity/selectivity_ci_high"]
    assert m["neuronmap/probing/label_only/selectivity_p_adj"] < 0.05


def test_per_example_control_task_sits_at_chance() -> None:
    report, _ = _run(Probing(n_permutations=0), planted_probe(), planted_model(), ["signal"])
    m = report.metrics
    assert m["neuronmap/probing/signal/control_accuracy"] < 0.7
    assert m["neuronmap/probing/signal/selectivity"] == pytest.approx(
        m["neuronmap/probing/signal/accuracy"] - m["neuronmap/probing/signal/control_accuracy"])


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([1] * 60, r"Target 'tag' has 1 class\(es\) \[1\]; probing needs at least 2"),
        ([0] * 57 + [1] * 3, r"classes with fewer examples than the 5 folds: \{'1': 3\}\. Lower cv \(at most 3\)"),
    ],
)
def test_unusable_targets_are_skipped_with_a_reason(values: list[int], reason: str) -> None:
    probe = nm.ProbeSet(torch.randn(60, 8), metadata={"tag": values})
    report, _ = _run(Probing("tag"), probe, planted_model(), ["signal"])
    result = report.results["probing"]
    assert result.status == "skipped"
    assert not result.metrics
    assert len(result.notes) == 1
    assert re.search(reason, result.notes[0])


def test_missing_target_values_are_left_out_with_a_note() -> None:
    base = planted_probe(n=100)
    labels = base.labels.astype(object)
    labels[:10] = None
    probe = nm.ProbeSet(base.inputs["input"], labels=labels)
    report, _ = _run(Probing(n_permutations=0, control_task=False), probe, planted_model(), ["signal"])
    result = report.results["probing"]
    assert result.status == "ok"
    assert "10 examples with a missing 'label' were left out." in result.notes
    assert result.tables["probing"]["n"].iloc[0] == 90


def test_few_permutations_for_many_layers_are_flagged() -> None:
    report, _ = _run(Probing(n_permutations=19, control_task=False), planted_probe(n=60), planted_model(), LAYERS)
    result = report.results["probing"]
    assert any("p-value resolution: with n_permutations=19 no p-value is below 1/20" in n
               and "none can fall below alpha=0.05" in n for n in result.notes)
    assert (result.tables["probing"]["p_resolution"] == 0.05).all()


def test_auto_permutations_reach_the_resolution_the_correction_needs() -> None:
    report, _ = _run(Probing(n_permutations="auto", control_task=False), planted_probe(n=60), planted_model(), LAYERS)
    table = report.results["probing"].tables["probing"].set_index("layer")
    assert not any("resolution" in n for n in report.results["probing"].notes)
    # the signal layer runs to permutation_count(3) = 599 and clears Holm over 3 layers;
    # null layers stop after 10 exceedances (Besag & Clifford 1991)
    assert table.loc["signal", "n_permutations"] == 599
    assert table.loc["signal", "p_adj"] == pytest.approx(3 / 600)
    assert (table.loc[["noise_a", "noise_b"], "n_permutations"] < 599).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cv": 1}, r"Probing: cv must be an int in \[2, inf\); got 1"),
        ({"n_permutations": -1}, r"Probing: n_permutations must be an int in \[0, inf\) or one of \['auto'\]; got -1"),
        ({"confidence": 1.5}, r"Probing: confidence must be a float in \(0, 1\); got 1.5"),
        ({"p_adjust": "nope"}, r"Probing: p_adjust must be one of \[.*'holm'.*\]; got 'nope'"),
        ({"estimator": object()}, r"Probing: estimator must be None or a scikit-learn classifier with fit/predict"),
        ({"blas_threads": 0}, r"Probing: blas_threads must be None or an int in \[1, inf\); got 0"),
        ({"n_resamples": 0}, r"Probing: n_resamples must be an int in \[1, inf\); got 0"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        Probing(**kwargs)


def test_n_bootstrap_is_a_deprecated_name_of_n_resamples() -> None:
    with pytest.warns(FutureWarning, match=r"Probing\(n_bootstrap=...\) is deprecated .* use n_resamples="):
        analysis = Probing(n_bootstrap=123)  # type: ignore[call-arg]
    assert analysis.n_resamples == 123
    assert "n_bootstrap" not in analysis.config()


class _ThreadRecordingProbe(LogisticRegression):
    """sklearn's default probe that records the BLAS thread limits in force while it fits."""

    seen: ClassVar[list[int]] = []

    def fit(self, x, y, sample_weight=None):  # type: ignore[override]
        from threadpoolctl import threadpool_info

        self.seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
        return super().fit(x, y, sample_weight)


def test_blas_thread_limit_holds_during_the_fits_changes_no_number_and_is_restored() -> None:
    from threadpoolctl import threadpool_info

    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    probe, model = planted_probe(n=120), planted_model()
    tables = {}
    for threads in (None, 1):
        _ThreadRecordingProbe.seen = []
        analysis = Probing(estimator=_ThreadRecordingProbe(), n_permutations=49, n_resamples=200, blas_threads=threads)
        report, _ = _run(analysis, probe, model, LAYERS)
        tables[threads] = report.results["probing"].tables["probing"]
        assert _ThreadRecordingProbe.seen
        assert set(_ThreadRecordingProbe.seen) == ({1} if threads == 1 else set(before))
    pd.testing.assert_frame_equal(tables[None], tables[1], check_exact=False, rtol=1e-9)
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == before


def test_missing_target_column_fails_the_analysis_with_the_column_list() -> None:
    monitor = nm.NeuronMap(planted_probe(n=30), layers=["signal"], analyses=[Probing("nope")], reporters=[])
    with pytest.warns(AnalysisFailedWarning, match=r"Column 'nope' not found .* it has \['group', 'label'\]"):
        report = monitor.run(planted_model(), step=0)
    assert report.results["probing"].status == "failed"


@pytest.mark.parametrize("name", ["probing", "cka", "rsa", "neuron_stats", "information", "projection"])
def test_every_analysis_skips_when_no_captured_layer_matches(name: str) -> None:
    import neuronmap.analyses.information
    import neuronmap.analyses.neurons
    import neuronmap.analyses.projection
    import neuronmap.analyses.similarity  # noqa: F401  (registers the analyses)
    from neuronmap.analyses.base import get_analysis

    analysis = get_analysis(name, layers=["nothing.*"])
    result = nm.NeuronMap(planted_probe(n=30), layers=["signal"], analyses=[analysis], reporters=[]).run(
        planted_model(), step=0).results[name]
    assert (result.status, result.notes) == ("skipped", ("No captured layer matches `layers`.",))
